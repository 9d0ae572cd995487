"""Metric writers: one JSON line per logging event plus TensorBoard summaries.

``<workdir>/metrics.jsonl`` is the project's machine-readable record (see DESIGN.md): each line is
``{"step": int, "split": "train" | "eval" | "test", <metric name>: float, ...}``, appended and
flushed immediately so a preempted run loses nothing and a resumed run keeps appending to the same
file. TensorBoard summaries go to ``<workdir>/tensorboard/`` for humans, images also to
``<workdir>/images/`` as PNG so they can be looked at without TensorBoard.

Only process 0 writes (multi-host runs would otherwise write every line N times); on other
processes, or with ``enabled=False``, every method is a no-op and nothing is created on disk.
TensorFlow is imported lazily, only for TensorBoard, and is kept off the GPUs so it cannot grab
accelerator memory that JAX needs.
"""

from __future__ import annotations

import io
import json
import numbers
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from PIL import Image

from mmgen_jax.metrics import media
from mmgen_jax.metrics.images import save_png

__all__ = ["SPLITS", "MetricWriter", "read_metrics"]

# The splits a metrics line may carry: "eval" is the validation split.
# "sample": scores of generated samples (class accuracy, Frechet distance, ...).
SPLITS = ("train", "eval", "test", "sample", "evaluate")

METRICS_FILENAME = "metrics.jsonl"


def _to_float(name: str, value: Any) -> float:
    """Python float from a Python / numpy / jax scalar (or any size-1 array)."""
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return float(value)
    array = np.asarray(jax.device_get(value))
    # dtype.kind "c" is complex; bfloat16 reports kind "V" but converts to float fine.
    if array.size == 1 and array.dtype.kind not in "cOSUM":
        try:
            return float(array.reshape(()))
        except (TypeError, ValueError):
            pass
    raise TypeError(f"metric {name!r} must be a real scalar, got {type(value)} {array.shape}")


def _image_to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, C]`` from uint8, or from float in [0, 1] (clipped)."""
    image = np.asarray(jax.device_get(image))
    if image.ndim == 2:
        image = image[..., None]  # [H, W] -> [H, W, 1]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, C] image with C in (1, 3, 4), got {image.shape}")
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard, images to PNG and TensorBoard.

    Args:
      workdir: the experiment directory.
      enabled: whether this writer writes; defaults to ``jax.process_index() == 0``.
    """

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.workdir = os.fspath(workdir)
        self.enabled = (jax.process_index() == 0) if enabled is None else bool(enabled)
        self.metrics_path = os.path.join(self.workdir, METRICS_FILENAME)
        self.tensorboard_dir = os.path.join(self.workdir, "tensorboard")
        self.images_dir = os.path.join(self.workdir, "images")
        # Opened lazily: a disabled writer (or one that never writes) creates nothing on disk.
        self._jsonl_file = None
        self._summary_writer = None
        self._tf = None

    # --- lazily created sinks -------------------------------------------------------------------

    def _jsonl(self):
        if self._jsonl_file is None:
            os.makedirs(self.workdir, exist_ok=True)
            # Append: a resumed run continues the same record.
            self._jsonl_file = open(self.metrics_path, "a", encoding="utf-8")
        return self._jsonl_file

    def _tensorboard(self):
        """(tf module, summary writer), importing TensorFlow on first use."""
        if self._summary_writer is None:
            import tensorflow as tf

            try:
                # TF would otherwise reserve GPU memory that JAX needs.
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass  # TF already initialised its devices elsewhere in the process.
            self._tf = tf
            self._summary_writer = tf.summary.create_file_writer(self.tensorboard_dir)
        return self._tf, self._summary_writer

    def _write_summary(self, step: int, tag: str, tensor, plugin_name: str, data_class: str):
        """Writes one TensorBoard summary event in the format TensorBoard's plugins read.

        ``tf.summary.scalar`` / ``image`` / ``text`` live in the ``tensorboard`` package, which
        tensorflow-cpu does not install; ``tf.summary.write`` with the plugin's metadata produces
        the same event (tensor + plugin name + data class) without that dependency.
        """
        tf, summary_writer = self._tensorboard()
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
            data_class=getattr(summary_pb2, data_class),
        )
        with summary_writer.as_default():
            tf.summary.write(tag=tag, tensor=tensor, step=int(step), metadata=metadata)

    # --- public API ---------------------------------------------------------------------------

    def write_scalars(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Appends ``{"step": step, "split": split, **metrics}`` to metrics.jsonl and TensorBoard.

        Values may be Python, numpy or jax scalars; they are stored as Python floats (reading a
        jax array blocks until it is computed, so call this at logging intervals). Non-finite
        values are written as ``NaN`` / ``Infinity``, which Python's ``json`` reads back.
        TensorBoard tags are ``f"{split}/{name}"``.

        Raises:
          ValueError: if ``split`` is not one of ``SPLITS`` or a metric is named step/split.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        reserved = {"step", "split"} & set(metrics)
        if reserved:
            raise ValueError(f"metric names {sorted(reserved)} are reserved")
        if not self.enabled:
            return
        step = int(step)
        values = {name: _to_float(name, value) for name, value in metrics.items()}
        record = {"step": step, "split": split, **values}
        jsonl = self._jsonl()
        jsonl.write(json.dumps(record) + "\n")
        jsonl.flush()

        tf, _ = self._tensorboard()
        for name, value in values.items():
            scalar = tf.constant(value, tf.float32)  # rank 0, as the scalars plugin expects
            self._write_summary(step, f"{split}/{name}", scalar, "scalars", "DATA_CLASS_SCALAR")

    def write_images(self, step: int, name: str, image: np.ndarray) -> None:
        """Saves one image as ``<workdir>/images/{name}_{step:07d}.png`` and to TensorBoard.

        Args:
          step: training step.
          name: tag, e.g. ``"eval/reconstructions"`` (slashes become ``_`` in the file name).
          image: ``[H, W, C]`` uint8, or float in [0, 1] (note: not [-1, 1]; use
            ``images.to_uint8`` / ``images.make_grid`` for model outputs).
        """
        if not self.enabled:
            return
        image = _image_to_uint8(image)  # [H, W, C] uint8
        filename = f"{name.replace('/', '_')}_{int(step):07d}.png"
        save_png(os.path.join(self.images_dir, filename), image)

        # The images plugin reads a string vector [width, height, encoded PNG, ...].
        png_bytes = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(png_bytes, "PNG")
        tf, _ = self._tensorboard()
        tensor = tf.constant([str(image.shape[1]), str(image.shape[0]), png_bytes.getvalue()])
        self._write_summary(step, name, tensor, "images", "DATA_CLASS_BLOB_SEQUENCE")

    def write_audio(self, step: int, name: str, audio: media.Audio) -> None:
        """Saves each clip as ``<workdir>/images/{name}_{step:07d}_{i}.wav`` and to TensorBoard."""
        if not self.enabled:
            return
        base = f"{name.replace('/', '_')}_{int(step):07d}"
        os.makedirs(self.images_dir, exist_ok=True)
        encoded = []
        for index, waveform in enumerate(np.asarray(audio.waveforms)):
            data = media.wav_bytes(waveform, audio.sample_rate)
            with open(os.path.join(self.images_dir, f"{base}_{index}.wav"), "wb") as f:
                f.write(data)
            encoded.append([data, b""])
        # The audio plugin reads a [k, 2] string tensor of (encoded audio, label) rows.
        tf, _ = self._tensorboard()
        self._write_summary(step, name, tf.constant(encoded), "audio", "DATA_CLASS_BLOB_SEQUENCE")

    def write_video(self, step: int, name: str, video: media.Video) -> None:
        """Saves a clip as ``<workdir>/images/{name}_{step:07d}.gif`` and to TensorBoard (the
        images plugin shows the animated GIF)."""
        if not self.enabled:
            return
        frames = np.asarray(video.frames)
        data = media.gif_bytes(frames, video.fps)
        filename = f"{name.replace('/', '_')}_{int(step):07d}.gif"
        os.makedirs(self.images_dir, exist_ok=True)
        with open(os.path.join(self.images_dir, filename), "wb") as f:
            f.write(data)
        tf, _ = self._tensorboard()
        tensor = tf.constant([str(frames.shape[2]), str(frames.shape[1]), data])
        self._write_summary(step, name, tensor, "images", "DATA_CLASS_BLOB_SEQUENCE")

    def write_media(self, step: int, name: str, item) -> None:
        """Writes what an objective's `visualize` returned: a picture (`[H, W, C]` array),
        `media.Audio` (WAV), `media.Video` (GIF) or text (a `str`: TensorBoard text and
        `<workdir>/images/{name}_{step:07d}.txt`)."""
        if isinstance(item, str):
            self.write_text_file(step, name, item)
        elif isinstance(item, media.Audio):
            self.write_audio(step, name, item)
        elif isinstance(item, media.Video):
            self.write_video(step, name, item)
        else:
            self.write_images(step, name, item)

    def write_text(self, step: int, name: str, text: str) -> None:
        """Writes a TensorBoard text summary (e.g. the resolved config, decoded text samples)."""
        if not self.enabled:
            return
        tf, _ = self._tensorboard()
        self._write_summary(step, name, tf.constant(str(text)), "text", "DATA_CLASS_TENSOR")

    def write_text_file(self, step: int, name: str, text: str) -> None:
        """Saves text (e.g. decoded samples) as ``<workdir>/images/{name}_{step:07d}.txt`` and
        as a TensorBoard text summary."""
        if not self.enabled:
            return
        os.makedirs(self.images_dir, exist_ok=True)
        filename = f"{name.replace('/', '_')}_{int(step):07d}.txt"
        with open(os.path.join(self.images_dir, filename), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        self.write_text(step, name, text)

    def flush(self) -> None:
        """Flushes pending TensorBoard events (JSON lines are flushed as they are written)."""
        if self._jsonl_file is not None:
            self._jsonl_file.flush()
        if self._summary_writer is not None:
            self._summary_writer.flush()

    def close(self) -> None:
        """Flushes and closes the files (a later write would reopen them)."""
        if self._jsonl_file is not None:
            self._jsonl_file.close()
            self._jsonl_file = None
        if self._summary_writer is not None:
            self._summary_writer.close()
            self._summary_writer = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_metrics(path: str | os.PathLike, *, split: str | None = None) -> list[dict[str, Any]]:
    """Reads metrics.jsonl back as a list of dicts, in the order written.

    Args:
      path: the metrics.jsonl file, or a workdir containing it.
      split: if given, only lines of that split.

    Returns:
      One dict per line (``"step"``, ``"split"`` and the metrics); ``[]`` if the file is missing.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILENAME)
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as metrics_file:
        for line in metrics_file:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if split is None or record.get("split") == split:
                records.append(record)
    return records
