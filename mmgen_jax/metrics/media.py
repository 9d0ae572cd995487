"""Sound and moving pictures a person listens to or watches: WAV and GIF files.

`Audio` and `Video` wrap what an objective's `visualize` returns for those modalities (a plain
`[H, W, C]` uint8 array is a picture); `MetricWriter.write_media` saves each kind as a file under
`<workdir>/images/` and to TensorBoard.
"""

from __future__ import annotations

import dataclasses
import io
import os
import wave

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Audio:
    """Waveforms `[N, T]` or `[N, T, C]` in [-1, 1] at `sample_rate` Hz (N clips)."""

    waveforms: np.ndarray
    sample_rate: int


@dataclasses.dataclass(frozen=True)
class Video:
    """Clips `[T, H, W, C]` uint8 (one clip, or several tiled into one frame) at `fps`."""

    frames: np.ndarray
    fps: float = 8.0


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of a `[T]` or `[T, C]` waveform in [-1, 1] (clipped)."""
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim == 1:
        waveform = waveform[:, None]
    if waveform.ndim != 2:
        raise ValueError(f"a waveform is [T] or [T, C], got shape {waveform.shape}")
    pcm = np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


def save_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> None:
    with open(path, "wb") as f:
        f.write(wav_bytes(waveform, sample_rate))


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float32 [T, C] in [-1, 1], sample rate) of a 16-bit PCM WAV file."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is read, not {8 * f.getsampwidth()}-bit")
        frames = f.readframes(f.getnframes())
        channels, rate = f.getnchannels(), f.getframerate()
    pcm = np.frombuffer(frames, "<i2").reshape(-1, channels)
    return pcm.astype(np.float32) / 32767.0, rate


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """Looping GIF of `[T, H, W, C]` uint8 frames (C = 1 or 3)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] not in (1, 3):
        raise ValueError(
            f"GIF frames must be uint8 [T, H, W, 1 or 3], got {frames.dtype} {frames.shape}"
        )
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=0,
    )
    return buffer.getvalue()


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0) -> None:
    with open(path, "wb") as f:
        f.write(gif_bytes(frames, fps))


def read_gif(path: str | os.PathLike) -> np.ndarray:
    """uint8 `[T, H, W, 3]` frames of a GIF file."""
    with Image.open(path) as image:
        frames = []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)
