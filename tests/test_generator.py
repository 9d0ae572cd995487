"""The DiT generator objective in pixel and latent space, sampling and the sampling CLI."""

import json
import os

import jax
import numpy as np
import pytest

from mmgen_jax import config_lib, inference, sample
from mmgen_jax.data import pipeline
from mmgen_jax.models.vqvae import VQVAE
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.generator import GeneratorObjective
from mmgen_jax.trainers.tokenizer import TokenizerObjective

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config(name, arg, data_dir):
    config = config_lib.load_config_file(os.path.join(CONFIGS, f"{name}.py"), arg)
    config.data.data_dir = data_dir
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def tokenizer_dir(data_dir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tokenizer"))
    loop.train_and_evaluate(_config("vqvae", "runlocal=True", data_dir), path, TokenizerObjective)
    return path


@pytest.fixture(scope="module")
def pixel_dir(data_dir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pixel"))
    config = _config("dit", "runlocal=True", data_dir)
    config.training.total_steps = 10
    loop.train_and_evaluate(config, path, GeneratorObjective)
    return path


def test_pixel_generator_trains_and_samples_deterministically(pixel_dir):
    records = [json.loads(line) for line in open(os.path.join(pixel_dir, "metrics.jsonl"))]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    assert {"mse", "vb"} <= set(train[-1])
    assert os.path.exists(os.path.join(pixel_dir, "images", "test_samples_0000010.png"))

    run = inference.load_trained(pixel_dir)
    variables = dict(run.variables)
    params = variables.pop("params")
    labels = np.array([0, 3, 9])
    first = run.objective.sample(params, variables, labels, jax.random.PRNGKey(1), num_samples=3)
    again = run.objective.sample(params, variables, labels, jax.random.PRNGKey(1), num_samples=3)
    assert first.shape == (3, 8, 8, 1)
    assert float(np.abs(first).max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    other = run.objective.sample(params, variables, labels, jax.random.PRNGKey(2), num_samples=3)
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_sampling_rejects_out_of_range_labels_and_guided_unconditional(pixel_dir, data_dir):
    run = inference.load_trained(pixel_dir)
    with pytest.raises(ValueError, match="label 10 is outside the class range"):
        run.objective.check_sampling_request(np.array([1, 10]), 2.0)
    with pytest.raises(ValueError, match="2 labels for num_samples=3"):
        run.objective.check_sampling_request(np.array([1, 2]), 2.0, num_samples=3)
    config = _config("dit", "runlocal=True", data_dir)
    config.generator.class_conditional = False
    config.sampling.cfg_scale = 2.0
    with pytest.raises(ValueError, match="cfg_scale=2.0 needs a class-conditional generator"):
        GeneratorObjective(config, {"shape": (8, 8, 1), "num_classes": 10})


def test_sample_cli_writes_grid_arrays_and_settings(pixel_dir):
    sample.main(
        [
            "--workdir",
            pixel_dir,
            "--num_samples",
            "20",
            "--steps",
            "3",
            "--cfg_scale",
            "1.5",
            "--tag",
            "t",
        ]
    )
    out = os.path.join(pixel_dir, "samples")
    arrays = np.load(os.path.join(out, "t.npz"))
    assert arrays["samples"].shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(arrays["labels"], np.arange(20) % 10)
    settings = json.load(open(os.path.join(out, "t.json")))
    assert settings["cfg_scale"] == 1.5 and settings["steps"] == 3
    assert settings["sampler"] == "ddim" and settings["seed"] == 0
    assert os.path.exists(os.path.join(out, "t.png"))
    with pytest.raises(SystemExit, match="outside the class range"):
        sample.main(["--workdir", pixel_dir, "--num_samples", "2", "--labels", "12"])


def test_latent_generator_round_trips_through_the_frozen_tokenizer(tokenizer_dir, data_dir):
    config = _config("dit", f"space=latent,tokenizer={tokenizer_dir},runlocal=True", data_dir)
    objective = GeneratorObjective(config, {"shape": (8, 8, 1), "num_classes": 10})
    assert objective.latent_shape == (4, 4, 8)
    variables = objective.init_variables(jax.random.PRNGKey(0), None)
    state = {k: v for k, v in variables.items() if k != "params"}
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 8, 8, 1)).astype(np.float32)
    latents = objective.to_latent(state, x)
    # Normalised with statistics from data: roughly zero mean, unit scale per channel.
    stats = objective.latent_stats
    assert stats["mean"].shape == (8,) and np.all(stats["std"] > 0)
    decoded = objective.to_signal(state, latents)
    tokenizer = inference.load_trained(tokenizer_dir)
    recon, _ = tokenizer.objective.model.apply(tokenizer.variables, x)
    np.testing.assert_allclose(
        np.asarray(decoded), np.clip(np.asarray(recon), -1, 1), rtol=1e-4, atol=1e-5
    )
    indices = tokenizer.objective.model.apply(
        tokenizer.variables, x, method=VQVAE.encode_to_indices
    )
    assert indices.shape == (3, 4, 4)


def test_latent_samples_decode_without_snapping_when_asked(tokenizer_dir, data_dir):
    config = _config("dit", f"space=latent,tokenizer={tokenizer_dir},runlocal=True", data_dir)
    config.generator.snap_to_codes = False
    objective = GeneratorObjective(config, {"shape": (8, 8, 1), "num_classes": 10})
    state = objective.frozen_variables()
    tokenizer = inference.load_trained(tokenizer_dir)
    model, variables = tokenizer.objective.model, tokenizer.variables
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 8, 8, 1)).astype(np.float32)
    latents = np.asarray(objective.to_latent(state, x))
    # Latents on the codes decode as the snapped ones do; between codes, as they are.
    recon, _ = model.apply(variables, x)
    np.testing.assert_allclose(
        np.asarray(objective.to_signal(state, latents)),
        np.clip(np.asarray(recon), -1, 1),
        rtol=1e-4,
        atol=1e-5,
    )
    between = latents + 0.5
    norm = state["latent_norm"]
    vectors = between * np.asarray(norm["std"]) + np.asarray(norm["mean"])
    out = variables["params"]["quantizer"].get("out_proj")  # absent when code_dim = latent_dim
    decoder_input = vectors if out is None else vectors @ out["kernel"] + out["bias"]
    expected = model.apply(variables, decoder_input, method=VQVAE.decode)
    decoded = np.asarray(objective.to_signal(state, between))
    np.testing.assert_allclose(decoded, np.clip(np.asarray(expected), -1, 1), atol=1e-4)
    snapped = model.apply(variables, vectors, method=VQVAE.decode_code_vectors)
    assert np.abs(np.clip(np.asarray(snapped), -1, 1) - decoded).max() > 1e-3


def _cached_config(tokenizer_dir, data_dir):
    config = _config("dit", f"space=latent,tokenizer={tokenizer_dir},runlocal=True", data_dir)
    config.generator.cache_latents = True
    return config


@pytest.fixture(scope="module")
def cached_run(tokenizer_dir, data_dir, tmp_path_factory):
    """A 10-step latent generator trained on cached latents: its workdir and the batch keys its
    training step saw."""
    path = tmp_path_factory.mktemp("cached")
    seen = set()

    class Recording(GeneratorObjective):
        def loss(self, params, model_state, batch, rng):
            seen.update(batch)  # at trace time
            return super().loss(params, model_state, batch, rng)

    config = _cached_config(tokenizer_dir, data_dir)
    config.training.total_steps = 10
    loop.train_and_evaluate(config, str(path), Recording)
    return path, seen


def test_cached_latents_are_the_encoded_training_split_and_train_alike(
    tokenizer_dir, data_dir, cached_run
):
    config = _cached_config(tokenizer_dir, data_dir)
    objective = GeneratorObjective(config, {"shape": (8, 8, 1), "num_classes": 10})
    cached = objective.training_arrays()
    split = pipeline.load_split_numpy(config.data, config.data.train_split)
    assert cached["latent"].shape == (len(split["image"]), 4, 4, 8)
    np.testing.assert_array_equal(cached["label"], split["label"])
    tokenizer = inference.load_trained(tokenizer_dir)
    vectors = tokenizer.objective.model.apply(
        tokenizer.variables, split["image"][:16], method=VQVAE.encode_to_code_vectors
    )
    np.testing.assert_allclose(cached["latent"][:16], np.asarray(vectors), atol=1e-6)
    # The loss of a cached batch is the loss of the same batch of images.
    variables = dict(objective.init_variables(jax.random.PRNGKey(0), None))
    params = variables.pop("params")
    labels = split["label"][:16]
    rng = jax.random.PRNGKey(5)
    from_images, _ = objective.loss(
        params, variables, {"image": split["image"][:16], "label": labels}, rng
    )
    from_cache, _ = objective.loss(
        params, variables, {"latent": cached["latent"][:16], "label": labels}, rng
    )
    np.testing.assert_allclose(float(from_cache), float(from_images), rtol=1e-5)
    # A run's training batches are the cached latents (no image reaches the training step).
    path, seen = cached_run
    assert seen == {"latent", "label"}
    records = [json.loads(line) for line in open(path / "metrics.jsonl")]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["step"] == 10 and train[-1]["loss"] < train[0]["loss"]
    pixel = _config("dit", "runlocal=True", data_dir)
    pixel.generator.cache_latents = True
    with pytest.raises(ValueError, match="cache_latents needs space='latent'"):
        GeneratorObjective(pixel, {"shape": (8, 8, 1), "num_classes": 10})


def test_sample_cli_overrides_snapping_of_latent_samples(cached_run, pixel_dir):
    workdir = str(cached_run[0])
    common = ["--workdir", workdir, "--num_samples", "4", "--steps", "3", "--cfg_scale", "1"]
    out = {}
    for snap in ("true", "false"):
        sample.main(common + ["--snap_to_codes", snap, "--tag", snap])
        settings = json.load(open(os.path.join(workdir, "samples", f"{snap}.json")))
        assert settings["snap_to_codes"] is (snap == "true")
        out[snap] = np.load(os.path.join(workdir, "samples", f"{snap}.npz"))["samples"]
    # Each equals the objective's own sampling with the tokenizer snapping (or not).
    run = inference.load_trained(workdir)
    variables = dict(run.variables)
    params = variables.pop("params")
    rng = jax.random.fold_in(jax.random.PRNGKey(0), 0)  # the CLI's key for its first batch
    for snap in ("true", "false"):
        run.objective.tokenizer.snap_to_codes = snap == "true"
        expected = run.objective.sample(
            params, variables, np.arange(4), rng, num_samples=4, steps=3, cfg_scale=1.0
        )
        np.testing.assert_allclose(out[snap], np.asarray(expected), atol=1e-5)
    assert np.abs(out["true"] - out["false"]).max() > 1e-3
    with pytest.raises(SystemExit, match="does not generate in a VQ-VAE's latent space"):
        sample.main(["--workdir", pixel_dir, "--num_samples", "2", "--snap_to_codes", "false"])


def test_latent_generator_bad_tokenizer_workdirs(data_dir, tmp_path, pixel_dir):
    info = {"shape": (8, 8, 1), "num_classes": 10}
    empty = _config("dit", "space=latent,runlocal=True", data_dir)
    with pytest.raises(ValueError, match="needs generator.tokenizer_workdir"):
        GeneratorObjective(empty, info)
    missing = _config("dit", f"space=latent,tokenizer={tmp_path}/nope,runlocal=True", data_dir)
    with pytest.raises(FileNotFoundError, match="nope"):
        GeneratorObjective(missing, info)
    wrong = _config("dit", f"space=latent,tokenizer={pixel_dir},runlocal=True", data_dir)
    with pytest.raises(ValueError, match="holds a 'generator' run, not a tokenizer"):
        GeneratorObjective(wrong, info)
