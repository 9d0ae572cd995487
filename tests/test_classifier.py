"""The digits classifier: model shapes, augmentation, and training through the shared loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import classifier as classifier_config
from mmgen_jax import inference, trainers
from mmgen_jax.metrics import read_metrics
from mmgen_jax.models.classifier import Classifier
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.classifier import ClassifierObjective, random_translate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FAKE_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"  # set by conftest.py


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, arg="runlocal=True"):
    config = classifier_config.get_config(arg)
    config.data.data_dir = data_dir
    return config


@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (2, 7, 9, 3), (2, 16, 2), (2, 4, 8, 8, 1)])
def test_logits_and_features_have_the_documented_shapes(shape):
    model = Classifier(num_classes=10, channels=(4, 8), hidden=12, dropout_rate=0.5)
    x = jnp.zeros(shape)
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).shape == (shape[0], 10)
    features = model.apply(variables, x, method=Classifier.features)
    assert features.shape == (shape[0], 12)
    assert float(jnp.min(features)) >= 0.0  # post-ReLU


def test_dropout_is_active_only_in_training():
    model = Classifier(num_classes=10, channels=(4,), hidden=64, dropout_rate=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
    rngs = {"dropout": jax.random.PRNGKey(2)}
    trained = model.apply(variables, x, train=True, rngs=rngs)
    assert not np.allclose(trained, model.apply(variables, x))


def test_random_translate_shifts_each_example_by_at_most_one_pixel():
    # One bright pixel per example, away from the border: after the shift it must sit within
    # one pixel of where it was on each axis, and the examples must not all move alike.
    x = jnp.full((64, 8, 8, 1), -1.0).at[:, 3, 4, 0].set(1.0)
    shifted = np.asarray(random_translate(x, jax.random.PRNGKey(0), max_shift=1))
    assert shifted.shape == x.shape
    rows, cols = np.nonzero(shifted[..., 0] == 1.0)[1:]
    assert len(rows) == 64
    assert set(rows) == {2, 3, 4} and set(cols) == {3, 4, 5}
    np.testing.assert_array_equal(random_translate(x, jax.random.PRNGKey(0), 0), x)


def test_trainer_registry_finds_the_classifier():
    assert trainers.get_objective_factory("classifier") is ClassifierObjective


def test_training_through_the_shared_loop_reduces_loss_on_8_devices(data_dir, tmp_path):
    config = _config(data_dir)
    config.training.total_steps = 80
    # Logging every step also syncs every step: with many steps in flight, XLA's in-process CPU
    # collectives over conftest's 8 fake devices can deadlock on a 2-core machine.
    config.training.log_every = 1
    config.training.eval_every = 100
    config.training.checkpoint_every = 100
    config.optimizer.learning_rate = 5e-3
    state = loop.train_and_evaluate(config, str(tmp_path), ClassifierObjective)
    assert int(state.step) == 80
    assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == 8
    losses = [m["loss"] for m in read_metrics(str(tmp_path), split="train")]
    assert len(losses) == 80
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    (test,) = read_metrics(str(tmp_path), split="test")
    assert 0.0 <= test["accuracy"] <= 1.0 and np.isfinite(test["cross_entropy"])

    # A restored run gives logits and features to other tools through `objective.model`.
    run = inference.load_trained(str(tmp_path))
    x = jnp.zeros((5, *run.info["shape"]))
    assert run.objective.model.apply(run.variables, x).shape == (5, 10)
    features = run.objective.model.apply(run.variables, x, method=Classifier.features)
    assert features.shape == (5, config.model.hidden)


def test_eval_sums_count_only_the_real_examples(data_dir):
    config = _config(data_dir)
    objective = ClassifierObjective(config, {"shape": (8, 8, 1), "num_classes": 10})
    images = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 1))
    variables = objective.init_variables(jax.random.PRNGKey(1), {"image": images})
    logits = np.asarray(objective.model.apply(variables, images))
    labels = np.array([0, 1, 2, 3, 4, 5])
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    batch = {"image": images, "label": jnp.asarray(labels), "mask": jnp.asarray(mask)}
    sums = jax.device_get(objective.eval_step(variables["params"], {}, batch))
    # Reference: numpy log-softmax over the 4 real examples.
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    cross_entropy = -log_probs[np.arange(6), labels][:4]
    correct = (logits.argmax(-1) == labels)[:4]
    assert float(sums["count"]) == 4
    assert float(sums["correct"]) == correct.sum()
    np.testing.assert_allclose(sums["cross_entropy"], cross_entropy.sum(), rtol=1e-5)
    metrics = objective.finalize_eval(sums)
    assert metrics["accuracy"] == pytest.approx(correct.mean())
    assert metrics["cross_entropy"] == pytest.approx(cross_entropy.mean(), rel=1e-5)


@pytest.mark.slow
def test_full_config_reaches_93_percent_on_the_digits_test_split(data_dir, tmp_path):
    # Trained the way users train it: the CLI on one CPU device. In this process, hundreds of
    # asynchronously dispatched steps over conftest's 8 fake devices can deadlock XLA's CPU
    # collectives on a 2-core machine.
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(_FAKE_DEVICES_FLAG, "").strip()
    command = [sys.executable, "-m", "mmgen_jax.main", "--config=configs/classifier.py"]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, f"--workdir={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    (test,) = read_metrics(str(tmp_path), split="test")
    print(f"digits classifier: test accuracy {test['accuracy']:.4f}, run took {elapsed:.1f} s")
    assert test["accuracy"] >= 0.93
