"""Audio: the notes builder, the audio layout, residual VQ, audio metrics and the pitch scorer."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf
import tensorflow_datasets as tfds

from mmgen_jax import config_lib
from mmgen_jax.data import audio as audio_layout
from mmgen_jax.data.builders import notes
from mmgen_jax.metrics import audio as audio_metrics
from mmgen_jax.models import quantizers
from mmgen_jax.models.quantizers import ResidualVQ, apply_codebook_restarts
from mmgen_jax.models.vqvae import depth_to_space, space_to_depth
from mmgen_jax.trainers.tokenizer import TokenizerObjective

# -- notes builder ------------------------------------------------------------------------------


def test_notes_are_deterministic_and_labelled_by_pitch_class():
    first, again = notes.make_example(0, 37), notes.make_example(0, 37)
    np.testing.assert_array_equal(first["audio"], again["audio"])
    assert first["audio"].shape == (notes.NUM_SAMPLES,) and first["audio"].dtype == np.float32
    assert first["label"] == 37 % 12 == first["midi_pitch"] % 12
    assert 0.3 <= np.max(np.abs(first["audio"])) <= 0.9 + 1e-6
    assert not np.array_equal(first["audio"], notes.make_example(1, 37)["audio"])


def test_pitch_estimator_is_calibrated_on_real_notes():
    examples = [notes.make_example(2, i) for i in range(48)]  # every class, both octaves
    waveforms = np.stack([e["audio"] for e in examples])
    f0 = audio_metrics.estimate_f0(waveforms, notes.SAMPLE_RATE)
    true_hz = np.array([notes.midi_to_hz(e["midi_pitch"]) for e in examples])
    # Detuning is at most 15 cents; the estimate must stay within 30 cents of the note.
    cents = 1200 * np.abs(np.log2(f0 / true_hz))
    assert np.max(cents) < 30, cents
    labels = np.array([e["label"] for e in examples])
    assert audio_metrics.pitch_class_accuracy(waveforms, labels, notes.SAMPLE_RATE) == 1.0


def test_pitch_of_a_pure_tone_and_of_silence():
    t = np.arange(8000) / 16000
    tones = np.stack([0.5 * np.sin(2 * np.pi * 440.0 * t), np.zeros_like(t)])
    f0 = audio_metrics.estimate_f0(tones, 16000)
    assert abs(f0[0] - 440.0) < 0.5 and f0[1] == 0.0
    np.testing.assert_array_equal(audio_metrics.hz_to_pitch_class(f0), [9, -1])  # A, none


# -- layout -------------------------------------------------------------------------------------


def _fake_builder(features: dict):
    """What `make_layout` reads of a builder: `info.features` and `info.full_name`."""
    info = types.SimpleNamespace(
        features=tfds.features.FeaturesDict(features), full_name="fake/1.0.0"
    )
    return types.SimpleNamespace(info=info)


SPEECH_FEATURES = {  # as speech_commands declares them
    "audio": tfds.features.Audio(file_format="wav", sample_rate=16000, dtype=np.int16),
    "label": tfds.features.ClassLabel(num_classes=12),
}
NSYNTH_FEATURES = {  # as nsynth declares them (audio, pitch, nested instrument family)
    "audio": tfds.features.Audio(shape=(64000,), dtype=np.float32, sample_rate=16000),
    "pitch": tfds.features.ClassLabel(num_classes=128),
    "instrument": {"family": tfds.features.ClassLabel(num_classes=11)},
}


def _config(**fields):
    return ml_config(fields)


def ml_config(fields):
    return types.SimpleNamespace(**fields)


def test_int16_clips_are_scaled_cropped_and_zero_padded():
    layout = audio_layout.make_layout(_config(num_samples=6), _fake_builder(SPEECH_FEATURES))
    assert layout.output_shape == (6, 1) and layout.num_classes == 12
    assert layout.extra_info() == {"sample_rate": 16000}
    short = np.array([-32768, 16384, 3], np.int16)
    out = layout.preprocess({"audio": tf.constant(short), "label": tf.constant(4, tf.int64)})
    np.testing.assert_allclose(out["image"][:, 0], [-1.0, 0.5, 3 / 32768, 0, 0, 0])
    assert out["label"].dtype == tf.int32 and int(out["label"]) == 4
    long = np.arange(10, dtype=np.int16) * 1000
    out = layout.preprocess({"audio": tf.constant(long), "label": tf.constant(0, tf.int64)})
    np.testing.assert_allclose(out["image"][:, 0], long[:6] / 32768.0)  # first 6 samples


def test_short_clips_error_policy():
    layout = audio_layout.make_layout(
        _config(num_samples=6, short_clips="error"), _fake_builder(SPEECH_FEATURES)
    )
    full = np.ones(8, np.int16)
    assert layout.preprocess({"audio": full, "label": 0})["image"].shape == (6, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than data.num_samples=6"):
        layout.preprocess({"audio": tf.constant(np.ones(3, np.int16)), "label": 0})
    with pytest.raises(ValueError, match="short_clips='drop'"):
        audio_layout.make_layout(
            _config(num_samples=6, short_clips="drop"), _fake_builder(SPEECH_FEATURES)
        )


def test_variable_length_needs_a_window_and_rates_must_match():
    with pytest.raises(ValueError, match="set data.num_samples"):
        audio_layout.make_layout(_config(), _fake_builder(SPEECH_FEATURES))
    with pytest.raises(ValueError, match="data.sample_rate=22050 .* 16000 Hz"):
        audio_layout.make_layout(
            _config(num_samples=4, sample_rate=22050), _fake_builder(SPEECH_FEATURES)
        )


def test_nsynth_features_and_nested_labels():
    builder = _fake_builder(NSYNTH_FEATURES)
    layout = audio_layout.make_layout(_config(label_key="instrument/family"), builder)
    assert layout.output_shape == (64000, 1) and layout.num_classes == 11
    wave = np.linspace(-1, 1, 64000).astype(np.float32)
    example = {"audio": wave, "pitch": 60, "instrument": {"family": tf.constant(3, tf.int64)}}
    out = layout.preprocess(example)
    np.testing.assert_allclose(out["image"][:, 0], wave)
    assert int(out["label"]) == 3
    pitch = audio_layout.make_layout(_config(label_key="pitch", num_samples=16000), builder)
    assert pitch.num_classes == 128 and int(pitch.preprocess(example)["label"]) == 60


def test_stereo_becomes_mono_by_averaging_and_other_counts_fail():
    stereo = {"audio": tfds.features.Audio(shape=(None, 2), dtype=np.int16, sample_rate=8000)}
    builder = _fake_builder(stereo)
    mono = audio_layout.make_layout(_config(num_samples=3, channels=1), builder)
    clip = np.array([[32767, -32767], [16384, 0], [0, 0]], np.int16)
    np.testing.assert_allclose(mono.preprocess({"audio": clip})["image"], [[0.0], [0.25], [0.0]])
    kept = audio_layout.make_layout(_config(num_samples=3), builder)
    np.testing.assert_allclose(kept.preprocess({"audio": clip})["image"], clip / 32768.0)
    assert kept.label_key is None  # unlabelled
    with pytest.raises(ValueError, match="data.channels=3 but feature 'audio' has 2"):
        audio_layout.make_layout(_config(num_samples=3, channels=3), builder)


@pytest.mark.slow  # builds the whole dataset (1,560 notes)
def test_notes_through_the_pipeline(tmp_path):
    from mmgen_jax.data import pipeline

    config = config_lib.load_config_file("configs/audio_vqvae.py", "runlocal=True").data
    config.unlock().data_dir = str(tmp_path)
    info = pipeline.dataset_info(config)
    assert info["shape"] == (8000, 1) and info["sample_rate"] == 16000
    assert info["num_classes"] == 12
    assert info["num_examples"] == {"train": 1200, "validation": 120, "test": 240}
    test = pipeline.load_split_numpy(config, "test")
    np.testing.assert_allclose(test["image"][5, :, 0], notes.make_example(2, 5)["audio"])
    np.testing.assert_array_equal(test["label"][:24], np.arange(24) % 12)


# -- residual VQ ---------------------------------------------------------------------------------


def _rvq(**kwargs):
    defaults = dict(num_stages=3, num_codes=8, code_dim=2, quantizer_dropout=True)
    return ResidualVQ(**{**defaults, **kwargs})


def _stage_codebooks(variables, num_stages):
    return [np.asarray(variables["params"][f"stages_{s}"]["codebook"]) for s in range(num_stages)]


def _numpy_greedy(z, codebooks):
    """Greedy residual quantisation: indices [N, S] and the prefix sums [S, N, d]."""
    residual, indices, sums, total = z.copy(), [], [], np.zeros_like(z)
    for codebook in codebooks:
        distances = ((residual[:, None, :] - codebook[None]) ** 2).sum(-1)
        index = distances.argmin(-1)
        indices.append(index)
        total = total + codebook[index]
        sums.append(total.copy())
        residual = residual - codebook[index]
    return np.stack(indices, -1), np.stack(sums)


def test_residual_quantisation_matches_numpy_greedy_reference():
    rvq = _rvq()
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 2))  # [B, T, d]
    variables = rvq.init(jax.random.PRNGKey(1), z)
    out = rvq.apply(variables, z)
    indices, sums = _numpy_greedy(np.asarray(z).reshape(-1, 2), _stage_codebooks(variables, 3))
    np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1, 3), indices)
    np.testing.assert_allclose(np.asarray(out.z_q).reshape(-1, 2), sums[-1], atol=1e-5)
    vectors = rvq.apply(variables, out.indices, method=ResidualVQ.code_vectors)
    np.testing.assert_allclose(np.asarray(vectors).reshape(-1, 2), sums[-1], atol=1e-5)
    two = rvq.apply(variables, out.indices, 2, method=ResidualVQ.code_vectors)
    np.testing.assert_allclose(np.asarray(two).reshape(-1, 2), sums[1], atol=1e-5)
    # nearest_indices is the same greedy search on code-space vectors.
    snapped = rvq.apply(variables, z, method=ResidualVQ.nearest_indices)
    np.testing.assert_array_equal(np.asarray(snapped).reshape(-1, 3), indices)


def test_more_stages_never_reconstruct_worse():
    # With the zero vector in every codebook a stage can always leave its residual unchanged,
    # so greedy residual quantisation can only reduce each vector's error.
    rvq = _rvq(num_stages=4, num_codes=16)
    z = jax.random.normal(jax.random.PRNGKey(2), (64, 2))
    variables = jax.tree_util.tree_map(lambda x: x, rvq.init(jax.random.PRNGKey(3), z))
    params = variables["params"]
    for s in range(4):
        params[f"stages_{s}"]["codebook"] = params[f"stages_{s}"]["codebook"].at[0].set(0.0)
    out = rvq.apply(variables, z)
    errors = [
        np.sum(
            (np.asarray(rvq.apply(variables, out.indices, k, method=ResidualVQ.code_vectors)) - z)
            ** 2,
            axis=-1,
        )
        for k in range(1, 5)
    ]
    for fewer, more in zip(errors, errors[1:], strict=False):
        assert np.all(more <= fewer + 1e-6)
    assert np.mean(errors[-1]) < np.mean(errors[0])
    # eval_stages chooses the bitrate of __call__.
    two = rvq.clone(eval_stages=2).apply(variables, z)
    np.testing.assert_allclose(np.sum((np.asarray(two.z_q) - z) ** 2, -1), errors[1], atol=1e-5)


def test_quantizer_dropout_keeps_a_uniform_prefix_per_example():
    rvq = _rvq(num_stages=3)
    z = jax.random.normal(jax.random.PRNGKey(4), (300, 4, 2))  # [B, T, d]
    variables = rvq.init(jax.random.PRNGKey(5), z)
    out = rvq.apply(
        variables,
        z,
        train=True,
        rngs={quantizers.RNG_STREAM: jax.random.PRNGKey(6)},
        mutable=[quantizers.STATE_COLLECTION],
    )[0]
    indices, sums = _numpy_greedy(np.asarray(z).reshape(-1, 2), _stage_codebooks(variables, 3))
    np.testing.assert_array_equal(np.asarray(out.indices).reshape(-1, 3), indices)
    sums = sums.reshape(3, 300, 4, 2)
    z_q = np.asarray(out.z_q)
    # Each example equals the sum of its first n_q stage codes, the same n_q at all positions.
    matches = np.all(np.abs(sums - z_q[None]) < 1e-5, axis=(2, 3))  # [S, B]
    kept = np.argmax(matches, axis=0) + 1
    assert np.all(matches.any(axis=0))
    counts = np.bincount(kept, minlength=4)[1:]
    assert counts.min() > 60, counts  # uniform over 1..3 (100 expected each)
    np.testing.assert_allclose(float(out.stats["mean_stages_used"]), kept.mean(), rtol=1e-6)
    # The straight-through estimator passes the decoder's gradient to z once.
    grad = jax.grad(lambda x: jnp.sum(rvq.apply(variables, x).z_q))(z)
    np.testing.assert_allclose(grad, np.ones_like(z))


def test_rvq_dead_code_restarts_reach_every_stage():
    rvq = _rvq(num_stages=2, num_codes=32, restart_after_steps=1, quantizer_dropout=False)
    z = jnp.full((2, 3, 2), 0.3)  # one distinct vector: most codes go unused
    variables = rvq.init(jax.random.PRNGKey(7), z)
    _, state = rvq.apply(
        variables,
        z,
        train=True,
        rngs={quantizers.RNG_STREAM: jax.random.PRNGKey(8)},
        mutable=[quantizers.STATE_COLLECTION],
    )
    params = apply_codebook_restarts(variables["params"], state)
    for s in range(2):
        stage = state[quantizers.STATE_COLLECTION][f"stages_{s}"]
        mask = np.asarray(stage["restart_mask"])
        assert mask.sum() >= 30
        np.testing.assert_allclose(
            np.asarray(params[f"stages_{s}"]["codebook"])[mask],
            np.asarray(stage["restart_vectors"])[mask],
        )


# -- audio metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("fft_size", [64, 256])
def test_stft_magnitudes_match_scipy(fft_size):
    x = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    hop = fft_size // 4
    mine = np.asarray(audio_metrics.stft_magnitude(jnp.asarray(x), fft_size, hop))
    window = scipy.signal.get_window("hann", fft_size)
    _, _, reference = scipy.signal.stft(
        x,
        nperseg=fft_size,
        noverlap=fft_size - hop,
        window=window,
        boundary="zeros",
        padded=False,
    )
    reference = np.abs(reference).transpose(0, 2, 1) * window.sum()  # scipy scales by 1/sum(w)
    assert mine.shape == reference.shape
    np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-3)


def test_si_snr_hand_made_case_and_scale_invariance():
    reference = np.array([[1.0, -1.0, 1.0, -1.0]])
    noise = 0.1 * np.array([[1.0, 1.0, -1.0, -1.0]])  # zero mean, orthogonal to the reference
    value = audio_metrics.si_snr(jnp.asarray(reference + noise), jnp.asarray(reference))
    np.testing.assert_allclose(value, [20.0], atol=1e-4)  # 10 log10(4 / 0.04)
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3, 500, 1))
    est = ref + 0.3 * rng.standard_normal((3, 500, 1))
    base = np.asarray(audio_metrics.si_snr(jnp.asarray(est), jnp.asarray(ref)))
    scaled = np.asarray(audio_metrics.si_snr(jnp.asarray(7.5 * est + 0.2), jnp.asarray(ref)))
    np.testing.assert_allclose(scaled, base, atol=1e-3)


def test_stft_loss_and_spectral_distance_closed_forms():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 2000, 1)), jnp.float32)
    assert float(audio_metrics.multi_resolution_stft_loss(x, x)) == 0.0
    np.testing.assert_allclose(audio_metrics.multiscale_spectral_distance(x, x), [0.0, 0.0])
    # Halving a loud signal (magnitudes >> LOG_EPS = 1): spectral convergence exactly 0.5,
    # log-magnitude L1 close to log 2.
    loud = 1000.0 * x
    loss = float(audio_metrics.multi_resolution_stft_loss(0.5 * loud, loud))
    np.testing.assert_allclose(loss, 0.5 + np.log(2.0), rtol=2e-3)
    # Against a silent reference the loss and its gradient stay finite (log(1 + |S|)).
    grad = jax.grad(
        lambda y: audio_metrics.multi_resolution_stft_loss(y, jnp.zeros_like(y), (128,))
    )(x)
    assert np.all(np.isfinite(grad))


def test_bitrate():
    assert audio_metrics.bitrate_kbps(200, [64] * 4) == pytest.approx(4.8)
    assert audio_metrics.bitrate_kbps(75, [1024] * 8) == pytest.approx(6.0)  # EnCodec 6 kbps


def test_space_to_depth_matches_numpy_and_inverts():
    x = np.arange(2 * 12 * 3).reshape(2, 12, 3).astype(np.float32)
    folded = np.asarray(space_to_depth(jnp.asarray(x), (4,)))
    np.testing.assert_array_equal(folded, x.reshape(2, 3, 12))  # 4 samples x 3 channels
    np.testing.assert_array_equal(depth_to_space(jnp.asarray(folded), (4,)), x)
    image = np.random.default_rng(3).standard_normal((1, 4, 6, 2))
    np.testing.assert_array_equal(depth_to_space(space_to_depth(image, (2, 3)), (2, 3)), image)


# -- tokenizer objective on audio ----------------------------------------------------------------


def test_tokenizer_audio_evaluation_at_every_stage_count():
    config = config_lib.load_config_file("configs/audio_vqvae.py", "runlocal=True")
    info = {"shape": (8000, 1), "num_classes": 12, "sample_rate": 16000}
    objective = TokenizerObjective(config, info)
    x = jnp.asarray(
        0.5 * np.sin(np.linspace(0, 400, 8000))[None, :, None].repeat(2, 0), jnp.float32
    )
    variables = objective.init_variables(jax.random.PRNGKey(0), {"image": x})
    params = variables.pop("params")
    sums = objective.eval_step(params, variables, {"image": x, "mask": jnp.ones(2)})
    metrics = objective.finalize_eval(jax.device_get(sums))
    stages = config.quantizer.num_stages
    # Decoding all stages from the indices is the model's own reconstruction.
    np.testing.assert_allclose(metrics[f"si_snr_{stages}stages"], metrics["si_snr"], atol=1e-3)
    # 8000 samples / 80 = 100 frames per 0.5 s = 200 frames/s, 4 bits per stage (16 codes).
    assert metrics["kbps"] == pytest.approx(200 * 4 * stages / 1000)
    assert metrics["kbps_1stages"] == pytest.approx(0.8)
    assert metrics["bits_per_example"] == 100 * 4 * stages
    assert 0 < metrics["codebook_usage_stage0"] <= 1
