"""Metrics: writers (metrics.jsonl + TensorBoard), image quality, codebook health, image grids.

Everything a trainer or evaluator needs to measure and record a run:

- ``writers``: ``MetricWriter`` (process 0 only) and ``read_metrics``.
- ``image_quality``: jit-able per-example ``mse``, ``psnr``, ``ssim``.
- ``codebook``: ``code_histogram`` (in the jitted step) and ``codebook_metrics`` (on the host).
- ``images``: ``to_uint8``, ``make_grid``, ``side_by_side``, ``save_png``.
- ``progress``: ``Progress``, the console progress display.

Importing this package does not import TensorFlow; the writer imports it on first use.
"""

from mmgen_jax.metrics.codebook import code_histogram, codebook_metrics
from mmgen_jax.metrics.image_quality import mse, psnr, ssim
from mmgen_jax.metrics.images import make_grid, save_png, side_by_side, to_uint8
from mmgen_jax.metrics.progress import Progress
from mmgen_jax.metrics.writers import SPLITS, MetricWriter, read_metrics

__all__ = [
    "SPLITS",
    "MetricWriter",
    "Progress",
    "code_histogram",
    "codebook_metrics",
    "make_grid",
    "mse",
    "psnr",
    "read_metrics",
    "save_png",
    "side_by_side",
    "ssim",
    "to_uint8",
]
