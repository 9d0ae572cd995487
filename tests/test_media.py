"""WAV and GIF writing: files read back to the samples written, TensorBoard events recorded."""

import glob
import os

import numpy as np
import pytest

from mmgen_jax.metrics import MetricWriter, media


def test_wav_round_trip_is_exact_to_16_bit_quantisation(tmp_path):
    t = np.arange(1600) / 16000.0
    waveform = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    path = tmp_path / "a.wav"
    media.save_wav(path, waveform, 16000)
    read, rate = media.read_wav(path)
    assert rate == 16000 and read.shape == (1600, 1)
    np.testing.assert_allclose(read[:, 0], waveform, atol=0.5 / 32767 + 1e-7)
    # Out-of-range samples are clipped, not wrapped around.
    media.save_wav(path, np.array([2.0, -3.0]), 8000)
    np.testing.assert_allclose(media.read_wav(path)[0][:, 0], [1.0, -1.0])


def test_gif_round_trip_keeps_every_frame(tmp_path):
    rng = np.random.default_rng(0)
    # Grey levels a GIF palette holds exactly (<= 256 distinct values per frame).
    frames = rng.integers(0, 256, (5, 12, 10, 1)).astype(np.uint8)
    path = tmp_path / "c.gif"
    media.save_gif(path, frames, fps=4)
    read = media.read_gif(path)
    assert read.shape == (5, 12, 10, 3)
    np.testing.assert_array_equal(read[..., 0], frames[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        media.save_gif(path, frames.astype(np.float32))


def test_writer_writes_wav_and_gif_files_and_tensorboard_events(tmp_path):
    writer = MetricWriter(str(tmp_path), enabled=True)
    waves = np.zeros((2, 800), np.float32)
    writer.write_media(3, "eval/samples", media.Audio(waves, 16000))
    writer.write_media(3, "eval/clips", media.Video(np.zeros((4, 8, 8, 1), np.uint8), 8.0))
    writer.close()
    images = sorted(os.listdir(tmp_path / "images"))
    assert images == [
        "eval_clips_0000003.gif",
        "eval_samples_0000003_0.wav",
        "eval_samples_0000003_1.wav",
    ]
    import tensorflow as tf

    tags = set()
    for path in glob.glob(str(tmp_path / "tensorboard" / "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add((value.tag, value.metadata.plugin_data.plugin_name))
    assert tags == {("eval/samples", "audio"), ("eval/clips", "images")}


def test_present_picks_picture_sound_or_clip_by_signal_rank(tmp_path):
    from mmgen_jax.metrics import present

    images = np.zeros((4, 8, 8, 1), np.float32)
    grid = present.present(images, 2, {})
    # 2x2 cells of 32x32 (8x8 upscaled 4x) with 1-pixel separators.
    assert grid.shape == (2 * 33 + 1, 2 * 33 + 1, 1) and grid.dtype == np.uint8
    sound = present.present(np.full((3, 100, 1), 2.0, np.float32), 2, {"sample_rate": 8000})
    assert sound.sample_rate == 8000 and sound.waveforms.max() == 1.0  # clipped to [-1, 1]
    clips = np.linspace(-1, 1, 2 * 5 * 16 * 16 * 1).reshape(2, 5, 16, 16, 1)
    video = present.present(clips, 2, {"fps": 4})
    # Frame t of the video tiles frame t of both clips (16x16 upscaled 2x).
    assert video.frames.shape == (5, 33 + 1, 2 * 33 + 1, 1) and video.fps == 4
    pairs = present.present_pairs(clips, clips, {})
    assert pairs.frames.shape[0] == 5
    assert [os.path.basename(p) for p in present.save(str(tmp_path / "s"), sound)] == [
        "s_0.wav",
        "s_1.wav",
        "s_2.wav",
    ]
    assert present.save(str(tmp_path / "v"), video) == [str(tmp_path / "v.gif")]
    with pytest.raises(ValueError, match="no presentation"):
        present.present(np.zeros((2, 3)), 1, {})
