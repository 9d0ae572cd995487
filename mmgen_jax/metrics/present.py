"""Batches of signals -> what a person looks at or listens to, for any modality.

Signals are channels-last in [-1, 1]: images `[N, H, W, C]` become one picture grid, audio
`[N, T, C]` a set of WAV clips (`media.Audio`), video `[N, T, H, W, C]` one animated grid of
clips (`media.Video`). `save` writes any of them to a file (or, for audio, one file per clip).
Objectives' `visualize`, the sampling CLI and the staged runs all go through here, so a new
modality only needs a branch in `present`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mmgen_jax.metrics import media
from mmgen_jax.metrics.images import make_grid, save_png, side_by_side, to_uint8

# How many pixels wide the smallest picture is drawn (8x8 digits -> 4x upscale).
MIN_VISUAL_SIZE = 32
DEFAULT_FPS = 8.0


def modality_of(shape: tuple[int, ...]) -> str:
    """'audio', 'image' or 'video' from a per-example signal shape `[*S, C]`."""
    kinds = {2: "audio", 3: "image", 4: "video"}
    if len(shape) not in kinds:
        raise ValueError(f"no presentation for signals of per-example shape {shape}")
    return kinds[len(shape)]


def _upscale(size: int) -> int:
    return max(1, MIN_VISUAL_SIZE // size)


def _video_grid(clips: np.ndarray, per_row: int, fps: float) -> media.Video:
    """Clips [N, T, H, W, C] -> one Video whose frame t tiles frame t of every clip."""
    upscale = _upscale(clips.shape[2])
    frames = [make_grid(clips[:, t], ncols=per_row, upscale=upscale) for t in range(clips.shape[1])]
    return media.Video(np.stack(frames), fps)


def present(samples: np.ndarray, per_row: int, info: dict[str, Any]) -> Any:
    """Samples [N, *S, C] in [-1, 1] -> a picture grid, `media.Audio` or `media.Video`.

    `info` is the dataset info (`sample_rate` for audio, `fps` for video, when known). Text
    samples (`info['modality'] == 'text'`) are token ids [N, L] and become one string, a
    decoded sample per line.
    """
    samples = np.asarray(samples)
    if info.get("modality") == "text":
        from mmgen_jax.data import text

        return "\n".join(text.decode_batch(samples, info))
    kind = modality_of(samples.shape[1:])
    if kind == "audio":
        return media.Audio(np.clip(samples, -1.0, 1.0), int(info.get("sample_rate") or 16000))
    clips = to_uint8(samples)
    if kind == "video":
        return _video_grid(clips, per_row, float(info.get("fps") or DEFAULT_FPS))
    return make_grid(clips, ncols=per_row, upscale=_upscale(samples.shape[1]))


def present_pairs(originals: np.ndarray, reconstructions: np.ndarray, info: dict[str, Any]) -> Any:
    """(original, reconstruction) pairs side by side; audio alternates original, reconstruction."""
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    kind = modality_of(originals.shape[1:])
    interleaved = np.stack([originals, reconstructions], axis=1)
    interleaved = interleaved.reshape(-1, *originals.shape[1:])
    if kind == "audio":
        return present(interleaved, 2, info)
    if kind == "video":
        pairs_per_row = max(1, int(np.ceil(np.sqrt(len(originals)))))
        return _video_grid(to_uint8(interleaved), 2 * pairs_per_row, info.get("fps") or DEFAULT_FPS)
    return side_by_side(originals, reconstructions, upscale=_upscale(originals.shape[1]))


def save(stem: str, item: Any) -> list[str]:
    """Writes `item` from `present` to `<stem>.png`, `<stem>.gif`, `<stem>_<i>.wav` or (text)
    `<stem>.txt`; returns the paths written."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    if isinstance(item, str):
        with open(f"{stem}.txt", "w", encoding="utf-8") as f:
            f.write(item + "\n")
        return [f"{stem}.txt"]
    if isinstance(item, media.Audio):
        paths = []
        for index, waveform in enumerate(item.waveforms):
            paths.append(f"{stem}_{index}.wav")
            media.save_wav(paths[-1], waveform, item.sample_rate)
        return paths
    if isinstance(item, media.Video):
        media.save_gif(f"{stem}.gif", item.frames, item.fps)
        return [f"{stem}.gif"]
    save_png(f"{stem}.png", item)
    return [f"{stem}.png"]
