"""Masked diffusion over VQ code-index grids of a frozen tokenizer (configs/masked_vq.py)."""

import os

import jax
import numpy as np
import pytest

from mmgen_jax import config_lib, inference
from mmgen_jax.data import pipeline
from mmgen_jax.models.vqvae import VQVAE
from mmgen_jax.trainers import get_objective_factory, loop

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.slow
def test_masked_vq_runlocal_trains_on_code_indices_and_decodes_samples(tmp_path):
    tokenizer_dir, generator_dir = str(tmp_path / "tokenizer"), str(tmp_path / "masked")
    tokenizer = config_lib.load_config_file(os.path.join(CONFIGS, "vqvae.py"), "runlocal=True")
    loop.train_and_evaluate(tokenizer, tokenizer_dir, get_objective_factory("tokenizer"))
    config = config_lib.load_config_file(
        os.path.join(CONFIGS, "masked_vq.py"), f"tokenizer={tokenizer_dir},runlocal=True"
    )
    loop.train_and_evaluate(config, generator_dir, get_objective_factory("masked"))

    run = inference.load_trained(generator_dir)
    objective = run.objective
    assert objective.num_classes == 10 and objective.token_shape == (4, 4)
    frozen = inference.load_trained(tokenizer_dir)
    images = pipeline.load_split_numpy(config.data, "test")["image"][:8]
    expected = frozen.objective.model.apply(
        frozen.variables, images, method=VQVAE.encode_to_indices
    )
    variables = dict(run.variables)
    params = variables.pop("params")
    np.testing.assert_array_equal(objective.tokens_of(variables, {"image": images}), expected)
    labels = np.arange(10)
    samples = np.asarray(
        objective.sample(params, variables, labels, jax.random.PRNGKey(0), num_samples=10)
    )
    assert samples.shape == (10, 8, 8, 1)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    assert 1 <= objective.last_num_calls <= config.sampling.steps
    test = [m for m in open(os.path.join(generator_dir, "metrics.jsonl")) if '"test"' in m]
    assert test and "nelbo_bits_per_token" in test[-1]
