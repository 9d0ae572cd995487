"""The sample-and-evaluate pipeline (`mmgen_jax.evaluate`) on a tiny random DiT.

A small random projection stands in for Inception so that the tests check the pipeline —
balanced labels, batches split over the 8 test devices, resumption, reference handling, the
results written — and not the network (tests/test_inception*.py do that).
"""

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from mmgen_jax import evaluate
from mmgen_jax.metrics import fid
from mmgen_jax.tools import import_dit
from tests import processes

MODEL_ARGS = dict(
    input_size=8,
    patch_size=2,
    in_channels=3,
    hidden_size=32,
    depth=1,
    num_heads=2,
    num_classes=4,
    learn_sigma=True,
    class_dropout_prob=0.1,
)
DIMS = {"pool": 6, "spatial": 5, "logits_unbiased": 4}


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dit"))
    model = import_dit.model_from_args(MODEL_ARGS)
    x = jnp.zeros((1, 8, 8, 3))
    params = meta.unbox(model.init(jax.random.PRNGKey(0), x, jnp.zeros(1, int), jnp.zeros(1, int)))
    # adaLN-Zero starts with a zero output layer; random weights everywhere give varied samples.
    leaves, tree = jax.tree.flatten(params["params"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [0.3 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    import_dit.write_generator_workdir(
        path, MODEL_ARGS, {"params": jax.tree.unflatten(tree, leaves)}, {"source": "test"}
    )
    return path


def _projection_extractor():
    """A fixed random projection of the pixels, in the shapes of the Inception outputs."""
    rng = np.random.default_rng(0)
    weights = {k: jnp.asarray(rng.normal(size=(8 * 8 * 3, d)) / 50) for k, d in DIMS.items()}

    def extract(variables, images):
        flat = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
        return {k: jnp.tanh(flat @ w) for k, w in variables.items()}

    return extract, weights


@pytest.fixture(scope="module")
def whole(generator_dir, tmp_path_factory):
    """One uninterrupted evaluation of 20 samples, without a reference."""
    out = tmp_path_factory.mktemp("whole")
    return evaluate.evaluate(_args(generator_dir, out), _projection_extractor())


def _args(workdir, out, **overrides):
    values = dict(
        workdir=workdir,
        num_samples=20,
        batch_size=8,
        seed=0,
        sampler="ddim",
        steps=4,
        cfg_scale=1.5,
        eta=0.0,
        cfg_channels=None,
        inception_weights="unused",
        reference=None,
        out=str(out),
        split_size=10,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_balanced_labels_and_the_dit_uint8_convention():
    labels = evaluate.balanced_labels(10, 4)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    assert evaluate.balanced_labels(10, 0) is None
    # clip(127.5 x + 128, 0, 255) truncated, as the official sample_ddp.py saves images.
    x = jnp.asarray([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0])
    np.testing.assert_array_equal(evaluate.to_uint8_like_dit(x), [0, 0, 64, 128, 255, 255, 255])


def test_interrupted_evaluation_resumes_to_the_same_numbers(generator_dir, whole, tmp_path):
    extractor = _projection_extractor()

    run = evaluate.inference.load_trained(generator_dir)
    args = _args(generator_dir, tmp_path / "resumed")
    settings = evaluate.EvalSettings(
        workdir=os.path.abspath(generator_dir),
        step=run.step,
        num_samples=20,
        batch_size=8,
        seed=0,
        **run.objective.sampling_settings("ddim", 4, 1.5, 0.0, None),
    )
    partial = evaluate.generate_features(
        run, *extractor, settings, args.out, split_size=10, stop_after=1
    )
    assert partial.count == 8
    resumed = evaluate.evaluate(args, extractor)
    assert resumed["inception_score"] == pytest.approx(whole["inception_score"], rel=1e-12)
    a = fid.load_reference(os.path.join(whole["out"], "samples_stats.npz"))
    b = fid.load_reference(os.path.join(resumed["out"], "samples_stats.npz"))
    np.testing.assert_allclose(a.mu, b.mu, rtol=1e-12)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-9, atol=1e-15)
    assert a.pool.shape == (20, DIMS["pool"])
    np.testing.assert_array_equal(a.pool, b.pool)
    # The features are not constant: the statistics are those of 20 distinct samples.
    assert np.linalg.matrix_rank(a.sigma) == DIMS["pool"]
    assert os.path.exists(os.path.join(whole["out"], "samples.png"))


def test_scores_against_a_reference_and_the_records_written(generator_dir, whole, tmp_path):
    extractor = _projection_extractor()
    reference = os.path.join(whole["out"], "samples_stats.npz")
    # The same samples against their own statistics: FID 0, precision = recall = 1.
    same = evaluate.evaluate(
        _args(generator_dir, tmp_path / "same", reference=reference), extractor
    )
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["sfid"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    # Other noise: a positive distance that equals the Fréchet distance of the two files.
    other = evaluate.evaluate(
        _args(generator_dir, tmp_path / "other", seed=1, reference=reference), extractor
    )
    a = fid.load_reference(reference)
    b = fid.load_reference(os.path.join(other["out"], "samples_stats.npz"))
    expected = fid.frechet_distance(b.mu, b.sigma, a.mu, a.sigma)
    assert other["fid"] == pytest.approx(expected, rel=1e-9) and other["fid"] > 1e-3
    with open(os.path.join(other["out"], "results.json")) as file:
        saved = json.load(file)
    assert saved["cfg_scale"] == 1.5 and saved["sampler"] == "ddim" and saved["steps"] == 4
    records = [json.loads(line) for line in open(os.path.join(generator_dir, "metrics.jsonl"))]
    scored = [r for r in records if r["split"] == "evaluate" and "fid" in r]
    assert {"fid", "sfid", "inception_score", "precision", "recall", "cfg_scale"} <= set(scored[-1])


def test_bad_requests_fail_before_sampling(generator_dir, whole, tmp_path):
    extractor = _projection_extractor()
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        evaluate.evaluate(
            _args(generator_dir, tmp_path / "a", reference=str(tmp_path / "missing.npz")),
            extractor,
        )
    broken = tmp_path / "broken.npz"
    np.savez(broken, mu=np.zeros(6))
    with pytest.raises(KeyError, match="sigma"):
        evaluate.evaluate(_args(generator_dir, tmp_path / "b", reference=str(broken)), extractor)
    with pytest.raises(ValueError, match="not divisible"):
        evaluate.evaluate(_args(generator_dir, tmp_path / "c", batch_size=6), extractor)
    # Resuming into an evaluation made with other settings is refused, naming the setting.
    with pytest.raises(ValueError, match="cfg_scale"):
        evaluate.evaluate(_args(generator_dir, whole["out"], cfg_scale=2.0), extractor)


# Runs one evaluation in a subprocess: a jax.distributed process when MMGEN_COORDINATOR_ADDRESS
# is set (sharding.initialize_distributed reads it), else a plain single process.
_WORKER = """
import os, sys
from mmgen_jax import evaluate, sharding
if os.environ.get("MMGEN_COORDINATOR_ADDRESS"):
    sharding.initialize_distributed()
from tests import test_evaluate as t
args = t._args(sys.argv[1], sys.argv[2], num_samples=16, batch_size=8)
evaluate.evaluate(args, t._projection_extractor())
"""


@pytest.mark.slow  # three subprocesses, each compiling the sampler: ~1 min
def test_two_processes_evaluate_the_samples_of_one(generator_dir, tmp_path):
    """Two jax.distributed processes (one CPU device each, gloo over loopback) split every batch
    and give the statistics one process gives; only process 0 writes."""
    command = [sys.executable, "-c", _WORKER, generator_dir]
    single = subprocess.run(
        [*command, str(tmp_path / "one")],
        cwd=processes.REPO,
        env=processes.SINGLE_DEVICE_ENV,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    processes.run_distributed([*command, str(tmp_path / "two")])
    one = fid.load_reference(str(tmp_path / "one" / "samples_stats.npz"))
    two = fid.load_reference(str(tmp_path / "two" / "samples_stats.npz"))
    assert two.pool.shape == (16, DIMS["pool"])
    np.testing.assert_allclose(two.pool, one.pool, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.mu, one.mu, rtol=1e-5, atol=1e-7)
    # Process 1 wrote nothing of its own: one results file, written by process 0.
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
