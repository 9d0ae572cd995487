"""The autoregressive baseline: causal token DiT, next-token NLL and left-to-right sampling,
against numpy and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmgen_jax import config_lib
from mmgen_jax.models.token_dit import TokenDiT
from mmgen_jax.trainers import autoregressive

VOCAB = 5  # real ids 0..4; id 5 is the start token
START = VOCAB


def _numpy_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_causal_token_dit_output_at_i_ignores_later_tokens():
    model = TokenDiT(
        vocab_size=VOCAB, hidden_size=16, depth=1, num_heads=2, time_conditioned=False, causal=True
    )
    rng = np.random.default_rng(0)
    z = rng.integers(0, VOCAB + 1, (2, 6))
    changed = z.copy()
    changed[:, 3] = (z[:, 3] + 1) % VOCAB  # position 3 changed
    # Random weights everywhere (adaLN-Zero and the final layer start at zero, which would
    # make every output equal), drawn in numpy: only the forward pass is compiled.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), z)
    variables = jax.tree.map(lambda x: 0.3 * rng.standard_normal(x.shape, np.float32), shapes)
    both = np.asarray(jax.jit(model.apply)(variables, np.concatenate([z, changed])))
    logits, other = both[:2], both[2:]
    assert logits.shape == (2, 6, VOCAB + 1)
    np.testing.assert_allclose(logits[:, :3], other[:, :3], rtol=1e-6, atol=1e-6)
    assert not np.allclose(logits[:, 3], other[:, 3])  # position 3 sees itself
    assert not np.allclose(logits[:, 5], other[:, 5])  # and later positions see it


def _bigram_model(table):
    """A causal model whose logits at position i are table[input_i] (input = previous token)."""
    table = jnp.asarray(table, jnp.float32)  # [V + 1, V + 1]
    return lambda inputs, y: table[inputs]


def test_sequence_nll_is_the_numpy_cross_entropy_of_the_shifted_sequence():
    table = np.random.default_rng(1).normal(size=(VOCAB + 1, VOCAB + 1)).astype(np.float32)
    x = np.array([[2, 0, 4, 4], [1, 3, 0, 0]])
    nll = jax.jit(lambda x: autoregressive.sequence_nll(_bigram_model(table), x, START))(x)
    expected = []
    for row in x:
        previous = [START, *row[:-1]]
        log_probs = _numpy_log_softmax(table[previous][:, :VOCAB])  # the start id never predicted
        expected.append(-sum(log_probs[i, token] for i, token in enumerate(row)))
    np.testing.assert_allclose(nll, expected, rtol=1e-5)
    np.testing.assert_array_equal(
        autoregressive.shift_right(jnp.asarray(x), START), [[5, 2, 0, 4], [5, 1, 3, 0]]
    )


@pytest.mark.parametrize("temperature", [1.0, pytest.param(2.0, marks=pytest.mark.slow)])
def test_sampling_draws_from_the_model_left_to_right(temperature):
    """First token from the start row's categorical (at the temperature), every later token
    fixed by the previous one: a peaked chain x_i = x_{i-1} + 1 mod V."""
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    table = np.full((VOCAB + 1, VOCAB + 1), -30.0, np.float32)
    table[START, :VOCAB] = np.log(np.maximum(p, 1e-30))
    table[START, START] = 10.0  # the start id is never drawn, however large its logit
    for token in range(VOCAB):
        table[token, (token + 1) % VOCAB] = 30.0 * temperature
    tokens = np.asarray(
        jax.jit(
            lambda key: autoregressive.ancestral_sample(
                _bigram_model(table), (4000, 4), START, key, temperature=temperature
            )
        )(jax.random.PRNGKey(0))
    )
    assert tokens.shape == (4000, 4) and tokens.max() < VOCAB
    tempered = p ** (1 / temperature) / np.sum(p ** (1 / temperature))
    np.testing.assert_allclose(np.bincount(tokens[:, 0], minlength=VOCAB), 4000 * tempered, atol=80)
    np.testing.assert_array_equal(tokens[:, 1:], (tokens[:, :-1] + 1) % VOCAB)


def test_guidance_combines_next_token_log_probs_like_numpy():
    table = np.random.default_rng(2).normal(size=(3, VOCAB + 1)).astype(np.float32)

    def model_fn(inputs, y):  # logits [B, L, V + 1] set by the label only
        return jnp.broadcast_to(jnp.asarray(table)[y][:, None], (*inputs.shape, VOCAB + 1))

    guided = jax.jit(
        lambda inputs, y: autoregressive.guided_log_probs(
            model_fn, inputs, START, y, cfg_scale=3.0, null_label=2
        )
    )(jnp.full((2, 3), START), jnp.array([0, 1]))
    cond = _numpy_log_softmax(table[[0, 1], :VOCAB])
    uncond = _numpy_log_softmax(table[[2, 2], :VOCAB])
    expected = _numpy_log_softmax(uncond + 3.0 * (cond - uncond))
    np.testing.assert_allclose(guided[:, 1, :VOCAB], expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(guided[..., START]))


def _objective(**generator):
    config = config_lib.load_config_file(
        "configs/text.py", "objective=autoregressive,runlocal=True"
    ).unlock()
    config.generator.update(generator)
    info = dict(modality="text", vocab_size=VOCAB, shape=(6,), pad_id=0, num_classes=None)
    return autoregressive.AutoregressiveObjective(config, info)


def test_objective_shapes_metrics_and_errors():
    objective = _objective()
    assert objective.model.causal and not objective.model.time_conditioned
    # All-zero weights (only the forward passes are compiled): uniform next-token logits.
    shapes = jax.eval_shape(objective.init_variables, jax.random.PRNGKey(0), {})["params"]
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
    tokens = jnp.array([[2, 3, 4, 0, 0, 0], [4, 4, 2, 3, 1, 0]])
    # Uniform over the 5 real ids: log2(5) bits per token.
    sums = jax.jit(objective.eval_step)(params, {}, {"tokens": tokens, "mask": jnp.ones(2)})
    metrics = objective.finalize_eval(jax.tree.map(np.asarray, sums))
    assert metrics["nelbo_bits_per_token"] == pytest.approx(np.log2(5), rel=1e-5)
    assert metrics["nelbo_bits_per_text_token"] == pytest.approx(np.log2(5) * 12 / 8, rel=1e-5)
    samples = objective.sample(params, {}, None, jax.random.PRNGKey(1), num_samples=3)
    assert samples.shape == (3, 6) and int(samples.max()) < VOCAB
    assert objective.last_num_calls == 6
    assert objective.sampling_settings(steps=6)["steps"] == 6
    with pytest.raises(ValueError, match="one step per token"):
        objective.sampling_settings(steps=64)
    with pytest.raises(ValueError, match="eta and cfg_channels"):
        objective.sampling_settings(eta=0.0)
    with pytest.raises(ValueError, match="temperature"):
        objective.sampling_settings(temperature=0.0)
    with pytest.raises(ValueError, match="unconditional"):
        objective.sample(params, {}, None, jax.random.PRNGKey(1), num_samples=3, cfg_scale=2.0)
    with pytest.raises(ValueError, match="generator.space='tokens'"):
        _objective(space="latent")
    with pytest.raises(ValueError, match="objective=autoregressive"):
        config_lib.load_config_file("configs/text.py", "objective=autoregressive,time=adaln")


@pytest.mark.slow
def test_text_quickstart_autoregressive_runlocal_and_sampling_cli(tmp_path):
    """The staged text recipe with the autoregressive objective, then the sampling CLI."""
    import json

    from mmgen_jax import sample
    from mmgen_jax.trainers import stages

    config = config_lib.load_config_file(
        "configs/text_quickstart.py", "objective=autoregressive,runlocal=True"
    )
    config.unlock()
    config.stages.generator.data.data_dir = str(tmp_path / "tfds")
    scores = stages.run_stages(config, str(tmp_path))
    assert 0.0 <= scores["correct_rate"] <= scores["parse_rate"] <= 1.0
    assert scores["test_nelbo_bits_per_token"] > 0
    with open(tmp_path / "samples.json") as f:
        assert json.load(f)["model_calls"] == 16  # one per token
    sample.main(["--workdir", str(tmp_path / "generator"), "--num_samples", "5", "--tag", "cli"])
    lines = (tmp_path / "generator" / "samples" / "cli.txt").read_text().splitlines()
    assert len(lines) == 5
