"""Video: the moving_digits builder, the video layout, frame metrics and the motion scorer."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mmgen_jax import config_lib
from mmgen_jax.data import pipeline, video
from mmgen_jax.data.builders import digits, moving_digits
from mmgen_jax.metrics import motion
from mmgen_jax.metrics.image_quality import psnr, ssim
from mmgen_jax.trainers.tokenizer import TokenizerObjective

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds_video"))


def _config(data_dir, name, **fields):
    return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, **fields))


# --- moving_digits builder ---------------------------------------------------------------------


def test_bounce_keeps_speed_and_stays_on_canvas():
    positions = moving_digits.bounce_trajectory(np.array([23, 1]), np.array([3, -2]), 6, 24)
    # Row: 23 -> (26 would leave [0, 24], flip) 20 -> 17 ...; column: 1 -> (-1, flip) 3 -> 5 ...
    np.testing.assert_array_equal(positions[:, 0], [23, 20, 17, 14, 11, 8])
    np.testing.assert_array_equal(positions[:, 1], [1, 3, 5, 7, 9, 11])


def test_moving_digits_clips_show_the_split_digits_bouncing(data_dir):
    builder = pipeline.get_builder(_config(data_dir, "moving_digits"))
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 2600, "validation": 200, "test": 297}
    sprites, labels = digits.digits_as_uint8()
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))
        start, stop = digits.SPLIT_RANGES[split]
        count = stop - start
        for index in (0, 1, count - 1, len(data["label"]) - 1):
            digit = start + index % count  # clip-major: every clip pass shows each digit once
            clip, positions = data["video"][index], data["position"][index]  # [8, 32, 32, 1]
            assert clip.shape == (8, 32, 32, 1) and data["label"][index] == labels[digit]
            expected = np.zeros_like(clip)
            for frame, (row, col) in zip(expected, positions, strict=True):
                frame[row : row + 8, col : col + 8] = sprites[digit]
            np.testing.assert_array_equal(clip, expected)
            speed = np.abs(np.diff(positions, axis=0))
            assert np.all(speed == speed[0]) and np.all(speed >= 1) and np.all(speed <= 3)
            assert positions.min() >= 0 and positions.max() <= 24
    # Deterministic: the first train clip is a pure function of its seed.
    first = tfds.as_numpy(builder.as_dataset("train[:1]", batch_size=-1, shuffle_files=False))
    again = moving_digits.make_clip(sprites[0], 8, (moving_digits._BASE_SEED, 0, 0, 0))
    np.testing.assert_array_equal(again["position"], first["position"][0])
    np.testing.assert_array_equal(again["video"], first["video"][0])


# --- video layout on a tiny local builder --------------------------------------------------------


class TinyClips(tfds.core.GeneratorBasedBuilder):
    """Variable-length 12x16 RGB clips under the key 'frames', like ucf101's layout."""

    VERSION = tfds.core.Version("1.0.0")
    LENGTHS = (3, 5, 7)
    # TFDS reads a builder's resources relative to its package; this test module is not one.
    __module__ = "mmgen_jax.data"

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Video(shape=(None, 12, 16, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index, length in enumerate(self.LENGTHS):
            clip = np.zeros((length, 12, 16, 3), np.uint8)
            for t in range(length):
                clip[t, :, 2:14] = 20 * t + 10 * index  # the central 12x12 square
                clip[t, :, :2] = 255  # left and right borders, cropped away
                clip[t, :, 14:] = 255
            yield index, {"frames": clip, "label": index}


def _tiny_clips(data_dir, **fields):
    config = _config(data_dir, "tiny_clips", video_key="frames", **fields)
    return config, pipeline.get_builder(config)


def _expected_value(index, t):
    return (20 * t + 10 * index) / 127.5 - 1.0


def test_layout_pads_short_clips_with_their_last_frame_crops_and_resizes(data_dir):
    config, builder = _tiny_clips(
        data_dir, num_frames=5, short_clips="pad", image_size=8, channels=1
    )
    layout = pipeline.make_layout(config, builder)
    assert isinstance(layout, video.VideoLayout)
    assert layout.output_shape == (5, 8, 8, 1) and layout.num_classes == 3
    assert pipeline.dataset_info(config)["fps"] == video.DEFAULT_FPS
    batch = pipeline.load_split_numpy(config, "train")
    assert batch["image"].shape == (3, 5, 8, 8, 1)
    np.testing.assert_array_equal(batch["label"], [0, 1, 2])
    for index, length in enumerate(TinyClips.LENGTHS):
        # First 5 frames; the 3-frame clip repeats its last frame twice.
        frames = [min(t, length - 1) for t in range(5)]
        expected = np.array([_expected_value(index, t) for t in frames], np.float32)
        expected = np.broadcast_to(expected[:, None, None, None], (5, 8, 8, 1))
        # rgb_to_grayscale weights sum to 0.9999, hence the tolerance.
        np.testing.assert_allclose(batch["image"][index], expected, atol=3e-4)


def test_layout_errors_on_short_clips_by_default(data_dir):
    config, builder = _tiny_clips(data_dir, num_frames=5)
    layout = pipeline.make_layout(config, builder)
    assert layout.output_shape == (5, 12, 16, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than data.num_frames=5"):
        pipeline.load_split_numpy(config, "train")
    # The 5- and 7-frame clips alone are fine.
    batch = pipeline.load_split_numpy(config, "train[1:]")
    np.testing.assert_allclose(batch["image"][1, 4, 0, 5], [_expected_value(2, 4)] * 3, atol=1e-6)
    np.testing.assert_allclose(batch["image"][1, 4, 0, 0], [1.0] * 3)  # borders kept uncropped


def test_layout_config_errors_name_the_bad_value(data_dir):
    config, builder = _tiny_clips(data_dir)
    with pytest.raises(ValueError, match="variable number of frames; set data.num_frames"):
        pipeline.make_layout(config, builder)
    config, builder = _tiny_clips(data_dir, num_frames=4, short_clips="loop")
    with pytest.raises(ValueError, match="short_clips='loop'"):
        pipeline.make_layout(config, builder)
    config = _config(data_dir, "tiny_clips", video_key="image_sequence", num_frames=4)
    with pytest.raises(ValueError, match="no Video feature 'image_sequence'.*'frames'"):
        pipeline.make_layout(config, builder)
    digits_config = _config(data_dir, "moving_digits", num_frames=9)
    with pytest.raises(ValueError, match="num_frames=9 but every clip .* has 8 frames"):
        pipeline.make_layout(digits_config, pipeline.get_builder(digits_config))


def test_moving_digits_layout_first_frames_and_fps(data_dir):
    config = _config(data_dir, "moving_digits", num_frames=4, fps=5.0)
    info = pipeline.dataset_info(config)
    assert info["shape"] == (4, 32, 32, 1) and info["num_classes"] == 10 and info["fps"] == 5.0
    clips = pipeline.load_split_numpy(config, "test[:2]")["image"]
    raw = tfds.as_numpy(
        pipeline.get_builder(config).as_dataset("test[:2]", batch_size=-1, shuffle_files=False)
    )
    np.testing.assert_allclose(clips, raw["video"][:, :4] / 127.5 - 1.0, atol=1e-6)


# --- tokenizer frame metrics -------------------------------------------------------------------


def test_tokenizer_reports_mean_of_per_frame_psnr_and_ssim(monkeypatch):
    config = config_lib.load_config_file(
        os.path.join(CONFIGS, "video_vqvae.py"), "dataset=moving_digits,runlocal=True"
    )
    objective = TokenizerObjective(config, {"shape": (2, 16, 16, 1)})
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 2, 16, 16, 1)).astype(np.float32)
    noise_scale = np.array([0.05, 0.4], np.float32)[None, :, None, None, None]  # per frame
    recon = np.clip(x + noise_scale * rng.normal(size=x.shape), -1, 1).astype(np.float32)

    def fake_apply(params, model_state, inputs, *, train):
        quantized = type("Q", (), {"indices": jnp.zeros((3, 2, 4, 4), jnp.int32)})
        return (jnp.asarray(recon), quantized), model_state

    monkeypatch.setattr(objective, "_apply", fake_apply)
    mask = np.array([1.0, 1.0, 0.0], np.float32)
    sums = objective.eval_step({}, {}, {"image": jnp.asarray(x), "mask": jnp.asarray(mask)})
    metrics = objective.finalize_eval(jax.device_get(sums))
    x01, r01 = (x + 1) / 2, (recon + 1) / 2
    frames = [(b, t) for b in range(2) for t in range(2)]  # the two unmasked clips
    frame_psnr = [float(psnr(r01[b, t][None], x01[b, t][None])[0]) for b, t in frames]
    frame_ssim = [float(ssim(r01[b, t][None], x01[b, t][None])[0]) for b, t in frames]
    assert metrics["frame_psnr"] == pytest.approx(np.mean(frame_psnr), rel=1e-4)
    assert metrics["frame_ssim"] == pytest.approx(np.mean(frame_ssim), rel=1e-4)
    # Mean of per-frame PSNR differs from the clip PSNR when frames differ in quality.
    assert metrics["psnr"] < metrics["frame_psnr"] - 1.0
    # Per-frame tokenizer: 2 frames of 16x16 -> a 2x4x4 code grid.
    assert metrics["bits_per_example"] == 2 * 4 * 4 * np.log2(config.quantizer.num_codes)


# --- locator and motion statistics ----------------------------------------------------------------


def _paste(positions, sprite, canvas=32):
    """Clip [1, T, canvas, canvas, 1] in [-1, 1] with `sprite` (uint8) at each position."""
    clip = moving_digits.render_clip(sprite, np.asarray(positions), canvas)
    return clip[None].astype(np.float32) / 127.5 - 1.0


def test_locator_finds_a_full_sprite_and_crops_it():
    sprite = np.random.default_rng(1).integers(40, 256, (8, 8, 1)).astype(np.uint8)
    positions = [(0, 0), (24, 24), (3, 17), (10, 2)]
    clip = _paste(positions, sprite)
    clip[0, 2, 0, 0] = 0.5  # a stray bright pixel outside the sprite does not move the window
    found = motion.locate_sprites(clip, 8)
    np.testing.assert_array_equal(found[0], positions)
    crops = motion.crop_sprites(clip, found, 8)
    np.testing.assert_allclose(crops[0, 1], sprite / 127.5 - 1.0, atol=1e-6)


def test_motion_statistics_of_known_trajectories():
    sprite = digits.digits_as_uint8()[0][1]  # a "1": empty border columns make corners ambiguous
    steady = moving_digits.bounce_trajectory(np.array([22, 2]), np.array([2, -3]), 8, 24)
    clip = _paste(steady, sprite)
    centres = motion.sprite_centres(clip, motion.locate_sprites(clip, 8), 8)
    np.testing.assert_allclose(np.diff(centres[0], axis=0), np.diff(steady, axis=0), atol=1e-4)
    stats = motion.motion_statistics(centres)
    assert stats["motion_consistency"] == 1.0 and stats["static_fraction"] == 0.0
    assert stats["speed_change"] == pytest.approx(0.0, abs=1e-4)
    assert stats["mean_speed"] == pytest.approx(2.5, abs=1e-4)
    # Speeds per axis 1,1,3,1 then rest: speed changes 0,2,2,1 -> 3 of 4 pairs differ.
    jumpy = np.array([[[0, 0], [1, 1], [2, 2], [5, 5], [6, 6], [6, 6]]], np.float64)
    stats = motion.motion_statistics(jumpy)
    assert stats["motion_consistency"] == pytest.approx(1 / 4)
    assert stats["speed_change"] == pytest.approx((0 + 2 + 2 + 1) / 4)
    assert stats["mean_speed"] == pytest.approx((1 + 1 + 3 + 1 + 0) / 5)
    still = motion.motion_statistics(np.zeros((2, 4, 2)))
    assert still["static_fraction"] == 1.0 and still["motion_consistency"] == 1.0


# --- the staged recipe ----------------------------------------------------------------------------


@pytest.mark.slow
def test_video_quickstart_runs_every_stage_and_scores_clips(tmp_path):
    from mmgen_jax.trainers import stages

    config = config_lib.load_config_file(
        os.path.join(CONFIGS, "video_quickstart.py"), "runlocal=True"
    )
    for name in config.stage_order:
        config.stages[name].data.data_dir = str(tmp_path / "tfds")
    workdir = str(tmp_path / "run")
    scores = stages.run_stages(config, workdir)
    saved = np.load(os.path.join(workdir, "samples.npz"))
    assert saved["samples"].shape == (10, 8, 32, 32, 1)
    assert os.path.exists(os.path.join(workdir, "samples.gif"))
    # Real test clips move at a constant speed per axis; the scorer must see exactly that.
    assert scores["real_motion_consistency"] == 1.0 and scores["real_static_fraction"] == 0.0
    assert scores["real_speed_change"] == pytest.approx(0.0, abs=1e-6)
    assert 1.0 <= scores["real_mean_speed"] <= 3.0
    for name in ("frame_accuracy", "clip_accuracy", "motion_consistency"):
        assert 0.0 <= scores[name] <= 1.0
