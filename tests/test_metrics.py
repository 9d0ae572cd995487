"""Tests for mmgen_jax.metrics against independent references (skimage, numpy, hand counts)."""

from __future__ import annotations

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mmgen_jax.metrics import codebook, image_quality, images, progress, writers


def _noisy_pair(shape, seed, noise=0.2):
    """Random images in [0, 1] and a noisy copy, float64 for the references."""
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    noisy = np.clip(clean + noise * rng.standard_normal(shape), 0.0, 1.0)
    return clean, noisy


# --- image quality ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (2, 32, 32, 3), (2, 16, 9, 2)])
def test_psnr_matches_skimage(shape):
    x, y = _noisy_pair(shape, seed=0)
    expected = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y, strict=True)]
    got = jax.jit(image_quality.psnr)(x, y)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_psnr_any_rank_data_range_and_identical_inputs():
    # Audio-shaped [B, T, C] in [-1, 1]: data_range 2, numpy closed form.
    x, y = _noisy_pair((4, 100, 2), seed=1)
    x, y = 2 * x - 1, 2 * y - 1
    expected = 10 * np.log10(4.0 / np.mean((x - y) ** 2, axis=(1, 2)))
    got = image_quality.psnr(x, y, data_range=2.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    # Identical inputs give a large finite value, not inf.
    same = image_quality.psnr(x, x)
    assert np.all(np.isfinite(np.asarray(same))) and np.all(np.asarray(same) >= 99.0)


def test_mse_matches_numpy():
    x, y = _noisy_pair((3, 5, 4, 2), seed=2)
    expected = np.mean((x - y) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(image_quality.mse(x, y)), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "shape, win_size",
    [
        ((3, 32, 32, 3), 11),  # full 11-tap window, plain 'valid' filtering
        ((3, 8, 8, 1), 7),  # the embedded digits: window shrinks to 7
        ((2, 8, 8, 3), 7),
        ((2, 16, 9, 2), 9),  # non-square, odd side limits the window
        ((2, 6, 10, 1), 5),  # even side: largest odd size <= 6
    ],
)
def test_ssim_matches_skimage(shape, win_size):
    x, y = _noisy_pair(shape, seed=3)
    expected = [
        structural_similarity(
            a,
            b,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=win_size,
            channel_axis=-1,
        )
        for a, b in zip(x, y, strict=True)
    ]
    got = jax.jit(image_quality.ssim)(x, y)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_ssim_data_range_and_identity():
    x, y = _noisy_pair((2, 12, 12, 1), seed=4)
    # Scaling the images and the data range together leaves SSIM unchanged (C1, C2 scale too).
    base = np.asarray(image_quality.ssim(x, y))
    scaled = np.asarray(image_quality.ssim(255 * x, 255 * y, data_range=255.0))
    np.testing.assert_allclose(scaled, base, atol=1e-5)
    np.testing.assert_allclose(np.asarray(image_quality.ssim(x, x)), 1.0, atol=1e-5)


# --- codebook ---------------------------------------------------------------------------------


def test_code_histogram_counts_and_mask():
    indices = jnp.array([[[0, 1], [1, 3]], [[3, 3], [3, 0]]])  # [B=2, 2, 2]
    counts = jax.jit(codebook.code_histogram, static_argnums=1)(indices, 5)
    np.testing.assert_array_equal(np.asarray(counts), [2, 2, 0, 4, 0])
    assert counts.dtype == jnp.float32
    # Mask drops the second example entirely.
    masked = codebook.code_histogram(indices, 5, mask=jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(masked), [1, 2, 0, 1, 0])


def test_codebook_metrics_hand_computed():
    counts = np.array([2.0, 2.0, 0.0, 4.0, 0.0])  # p = (1/4, 1/4, 0, 1/2, 0)
    metrics = codebook.codebook_metrics(counts)
    entropy = -(0.25 * np.log(0.25) * 2 + 0.5 * np.log(0.5))  # = 1.5 log 2
    assert metrics["codebook_usage"] == pytest.approx(3 / 5)
    assert metrics["perplexity"] == pytest.approx(np.exp(entropy))
    assert metrics["perplexity"] == pytest.approx(2**1.5)
    assert metrics["dead_codes"] == 2
    # A uniform histogram has perplexity K; a single used code has perplexity 1.
    assert codebook.codebook_metrics(jnp.ones(8))["perplexity"] == pytest.approx(8.0)
    one_code = codebook.codebook_metrics(np.array([0, 7, 0, 0]))
    assert one_code["perplexity"] == pytest.approx(1.0)
    assert one_code["dead_codes"] == 3


# --- writers ----------------------------------------------------------------------------------


def test_writer_writes_jsonl_and_tensorboard(tmp_path):
    workdir = str(tmp_path / "run")
    writer = writers.MetricWriter(workdir, enabled=True)
    writer.write_scalars(10, "train", {"loss": np.float32(0.5), "lr": jnp.array(1e-3)})
    writer.write_scalars(20, "eval", {"psnr": 25})
    writer.write_images(20, "eval/grid", np.zeros((4, 6, 3), np.uint8))
    writer.write_text(20, "config", "hello")
    writer.flush()
    writer.close()

    with open(os.path.join(workdir, "metrics.jsonl")) as metrics_file:
        lines = [json.loads(line) for line in metrics_file]
    assert lines[0] == {"step": 10, "split": "train", "loss": 0.5, "lr": pytest.approx(1e-3)}
    assert lines[1] == {"step": 20, "split": "eval", "psnr": 25.0}
    assert type(lines[0]["loss"]) is float and type(lines[1]["psnr"]) is float
    assert writers.read_metrics(workdir) == lines
    assert writers.read_metrics(workdir, split="eval") == [lines[1]]

    event_files = os.listdir(os.path.join(workdir, "tensorboard"))
    assert len(event_files) == 1 and event_files[0].startswith("events.out.tfevents")
    # Read the events back with TensorFlow's own reader.
    import tensorflow as tf

    event_path = os.path.join(workdir, "tensorboard", event_files[0])
    summaries = {}
    for event in tf.compat.v1.train.summary_iterator(event_path):
        for value in event.summary.value:
            summaries[value.tag] = (event.step, value)
    step, loss = summaries["train/loss"]
    assert step == 10 and loss.metadata.plugin_data.plugin_name == "scalars"
    assert tf.make_ndarray(loss.tensor) == pytest.approx(0.5)
    assert summaries["eval/psnr"][0] == 20
    assert summaries["eval/grid"][1].metadata.plugin_data.plugin_name == "images"
    assert summaries["config"][1].metadata.plugin_data.plugin_name == "text"
    png = Image.open(os.path.join(workdir, "images", "eval_grid_0000020.png"))
    assert png.size == (6, 4)


def test_writer_rejects_bad_split(tmp_path):
    writer = writers.MetricWriter(str(tmp_path), enabled=True)
    with pytest.raises(ValueError, match="split"):
        writer.write_scalars(0, "validation", {"loss": 1.0})
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_disabled_writer_is_noop(tmp_path):
    workdir = tmp_path / "disabled"
    writer = writers.MetricWriter(str(workdir), enabled=False)
    writer.write_scalars(1, "train", {"loss": 1.0})
    writer.write_images(1, "grid", np.zeros((2, 2, 1), np.uint8))
    writer.write_text(1, "note", "text")
    writer.flush()
    writer.close()
    assert not workdir.exists()
    assert writers.read_metrics(str(workdir)) == []


# --- images -----------------------------------------------------------------------------------


def test_to_uint8_endpoints():
    out = images.to_uint8(np.array([-1.0, 0.0, 1.0, -3.0, 3.0]))
    np.testing.assert_array_equal(out, [0, 128, 255, 0, 255])
    assert out.dtype == np.uint8


def test_make_grid_shape_and_placement():
    # Five 2x3 uint8 images with constant values 10, 20, ..., 50; 3 columns -> 2 rows.
    batch = np.stack([np.full((2, 3, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = images.make_grid(batch, ncols=3, pad=1, upscale=2, pad_value=0)
    # Height: 2 rows * (2*2 + 1) + 1; width: 3 cols * (3*2 + 1) + 1.
    assert grid.shape == (11, 22, 1) and grid.dtype == np.uint8
    for index in range(5):
        row, col = divmod(index, 3)
        top, left = 1 + row * 5, 1 + col * 7
        np.testing.assert_array_equal(grid[top : top + 4, left : left + 6], 10 * (index + 1))
    assert grid[0].max() == 0 and grid[:, 0].max() == 0  # border is padding
    assert grid[6:10, 15:21].max() == 0  # unused sixth cell is padding

    default = images.make_grid(np.zeros((5, 8, 8, 3), np.float32))  # ceil(sqrt(5)) = 3 columns
    assert default.shape == (2 * 9 + 1, 3 * 9 + 1, 3)


def test_side_by_side_places_reconstruction_right_of_original():
    originals = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (10, 30, 50)])
    reconstructions = originals + 1
    grid = images.side_by_side(originals, reconstructions, pairs_per_row=2, pad=1, pad_value=0)
    assert grid.shape == (2 * 3 + 1, 4 * 3 + 1, 3)
    cell = lambda row, col: grid[1 + 3 * row : 3 + 3 * row, 1 + 3 * col : 3 + 3 * col]
    for pair, value in enumerate((10, 30, 50)):
        row, col = divmod(2 * pair, 4)
        np.testing.assert_array_equal(cell(row, col), value)
        np.testing.assert_array_equal(cell(row, col + 1), value + 1)


def test_save_png_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    images.save_png(tmp_path / "sub" / "gray.png", gray)
    images.save_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "sub" / "gray.png")), gray[..., 0]
    )
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
    with pytest.raises(TypeError):
        images.save_png(tmp_path / "float.png", rgb.astype(np.float32))


# --- progress ---------------------------------------------------------------------------------


def test_progress_non_tty_prints_compact_lines(monkeypatch):
    clock = iter([0.0, 100.0, 101.0, 102.0, 110.0, 111.0, 112.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()  # not a TTY
    display = progress.Progress(100, enabled=True, stream=stream, min_interval_s=5.0)
    display.update(1, loss=jnp.array(2.0))  # t=0: first step (compilation)
    assert display.steps_per_second is None
    display.update(11, loss=1.5)  # t=100: first rate sample, printed (interval passed)
    assert display.steps_per_second == pytest.approx(0.1)  # 10 steps in 100 s
    display.update(21, loss=1.0)  # t=101: within 5 s of the last line, not printed
    assert display.steps_per_second == pytest.approx(20 / 101)
    display.update(51, loss=0.5)  # t=102
    display.update(61, loss=0.25)  # t=110: printed
    display.update(100, loss=0.125)  # t=111: last step, always printed
    display.close()  # t=112: nothing new to draw
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == "train step 1/100 (1.0%) loss=2"
    assert lines[1].startswith("train step 11/100 (11.0%) loss=1.5 | 0.1 steps/s | ETA 0:14:50")
    assert lines[-1].startswith("train step 100/100 (100.0%) loss=0.125")


def test_progress_disabled_prints_nothing():
    stream = io.StringIO()
    display = progress.Progress(10, enabled=False, stream=stream)
    display.update(5, loss=1.0)
    display.close()
    assert stream.getvalue() == ""
