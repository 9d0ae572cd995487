"""FSDP on a 2x4 mesh, restoring across meshes, unreadable checkpoints and preemption."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import dit, vqvae
from mmgen_jax.metrics import read_metrics
from mmgen_jax.trainers import get_objective_factory, loop
from tests import processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(module, data_dir, steps, data=-1, fsdp=1, **training):
    config = module.get_config("runlocal=True")
    config.data.data_dir = data_dir
    config.mesh.data, config.mesh.fsdp = data, fsdp
    settings = dict(
        total_steps=steps, global_batch_size=16, log_every=5, eval_every=1000, checkpoint_every=10
    )
    config.training.update({**settings, **training})
    config.optimizer.warmup_steps = 2
    return config


def _assert_identical(a, b) -> None:
    a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _relative_difference(a, b) -> float:
    a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    return max(
        np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("module", [vqvae, dit], ids=["vqvae", "dit"])
def test_fsdp_2x4_matches_one_device_and_restores_across_meshes(module, data_dir, tmp_path):
    factory = get_objective_factory(module.get_config("runlocal=True").trainer)
    one = loop.train_and_evaluate(
        _config(module, data_dir, 20, data=1),
        str(tmp_path / "one"),
        factory,
        devices=jax.devices()[:1],
    )
    many = loop.train_and_evaluate(
        _config(module, data_dir, 20, data=2, fsdp=4), str(tmp_path / "many"), factory
    )
    assert _relative_difference(many.params, one.params) < 1e-5
    assert _relative_difference(many.ema_params, one.ema_params) < 1e-5
    # The kernels really are split 4 ways: per-device parameter bytes shrink ~4x.
    memory_one = json.load(open(tmp_path / "one" / "memory.json"))
    memory_many = json.load(open(tmp_path / "many" / "memory.json"))
    ratio = memory_one["params_per_device_mb"] / memory_many["params_per_device_mb"]
    assert 3.5 < ratio <= 4.0
    assert memory_many["argument_size_in_bytes_mb"] < memory_one["argument_size_in_bytes_mb"] / 3

    # 2x4 checkpoint -> 1 device, 1-device checkpoint -> 4x2: the same numbers.
    back = loop.train_and_evaluate(
        _config(module, data_dir, 20, data=1),
        str(tmp_path / "many"),
        factory,
        devices=jax.devices()[:1],
    )
    _assert_identical(back.params, many.params)
    moved = loop.train_and_evaluate(
        _config(module, data_dir, 20, data=4, fsdp=2), str(tmp_path / "one"), factory
    )
    _assert_identical(moved.params, one.params)


def test_unreadable_newest_checkpoint_is_skipped_and_resume_is_exact(data_dir, tmp_path, caplog):
    factory = get_objective_factory("tokenizer")
    workdir = tmp_path / "run"
    straight = loop.train_and_evaluate(
        _config(vqvae, data_dir, 30, keep_checkpoints=3), str(workdir), factory
    )
    # As if the run had been killed while writing step 30 and the disk had then lost the array
    # files of step 20: step 30 never committed, step 20 is unreadable, step 10 is intact.
    shutil.rmtree(workdir / "checkpoints" / "30")
    for root, _, files in os.walk(workdir / "checkpoints" / "20" / "state"):
        for name in files:
            if name not in ("_METADATA", "_CHECKPOINT_METADATA"):
                os.remove(os.path.join(root, name))
    with caplog.at_level("WARNING"):
        resumed = loop.train_and_evaluate(
            _config(vqvae, data_dir, 30, keep_checkpoints=3), str(workdir), factory
        )
    assert "skipping unreadable checkpoint" in caplog.text and "checkpoints/20" in caplog.text
    assert any(name.startswith("unreadable-20-") for name in os.listdir(workdir / "checkpoints"))
    # Resumed from step 10 and re-read the same batches: bitwise the uninterrupted run.
    _assert_identical(resumed.params, straight.params)
    _assert_identical(resumed.opt_state, straight.opt_state)


def test_all_checkpoints_unreadable_is_an_error_not_a_fresh_start(data_dir, tmp_path):
    factory = get_objective_factory("tokenizer")
    loop.train_and_evaluate(_config(vqvae, data_dir, 10), str(tmp_path), factory)
    for root, _, files in os.walk(tmp_path / "checkpoints" / "10" / "state"):
        for name in files:
            os.remove(os.path.join(root, name))
    with pytest.raises(RuntimeError, match="can be read"):
        loop.train_and_evaluate(_config(vqvae, data_dir, 20), str(tmp_path), factory)


def test_sigterm_saves_the_current_step_and_exits_zero(data_dir, tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmgen_jax.main",
            "--config=configs/vqvae.py:runlocal=True",
            f"--workdir={workdir}",
            "--config.training.total_steps=100000",
            "--config.training.log_every=5",
            "--config.training.checkpoint_every=100000",
        ],
        cwd=REPO,
        env=dict(os.environ, TFDS_DATA_DIR=data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while not (workdir / "metrics.jsonl").exists() or not read_metrics(str(workdir)):
        assert process.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert len(steps) == 1 and steps[0] >= 1
    assert f"preempted: saved step {steps[0]}" in output


@pytest.mark.slow  # two jax.distributed processes + a reference run: ~1 min of the suite
def test_two_processes_match_one_process(data_dir, tmp_path):
    """Two processes (jax.distributed on loopback, gloo collectives, one CPU device each) train
    the same config as one process with the same global batch and get the same parameters;
    only process 0 writes metrics."""
    args = [
        sys.executable,
        "-m",
        "mmgen_jax.main",
        "--config=configs/vqvae.py:runlocal=True",
        "--config.training.total_steps=10",
        "--config.training.checkpoint_every=10",
        "--config.data.host_sharding=batch",
        f"--config.data.data_dir={data_dir}",
    ]
    single = subprocess.run(
        [*args, f"--workdir={tmp_path / 'single'}"],
        cwd=REPO,
        env=processes.SINGLE_DEVICE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    outputs = processes.run_distributed(
        [*args, f"--workdir={tmp_path / 'multi'}", "--distributed"], timeout=300
    )
    assert "process 1/2" in outputs[1]

    from mmgen_jax import inference

    one = inference.load_trained(str(tmp_path / "single"), use_ema=False)
    two = inference.load_trained(str(tmp_path / "multi"), use_ema=False)
    assert one.step == two.step == 10
    assert _relative_difference(two.variables["params"], one.variables["params"]) < 1e-5
    assert len(read_metrics(str(tmp_path / "multi"))) == len(read_metrics(str(tmp_path / "single")))


@pytest.mark.slow  # three trainings
def test_remat_is_exact_and_bf16_compute_keeps_fp32_state(data_dir, tmp_path):
    factory = get_objective_factory("tokenizer")
    runs = {}
    for name, remat, dtype in [
        ("plain", False, "float32"),
        ("remat", True, "float32"),
        ("bf16", False, "bfloat16"),
    ]:
        config = _config(vqvae, data_dir, 6, compute_dtype=dtype)
        config.model.remat = remat
        runs[name] = loop.train_and_evaluate(config, str(tmp_path / name), factory)
    # Recomputing the residual blocks in the backward pass changes nothing but memory.
    assert _relative_difference(runs["remat"].params, runs["plain"].params) < 1e-6
    # bf16 matmuls/convs: parameters, EMA and optimizer state stay fp32; training stays close.
    for leaf in jax.tree.leaves((runs["bf16"].params, runs["bf16"].opt_state)):
        assert leaf.dtype in (np.float32, np.int32)
    assert _relative_difference(runs["bf16"].params, runs["plain"].params) > 0  # really bf16
    losses = {
        name: [m["reconstruction_mse"] for m in read_metrics(str(tmp_path / name), split="train")]
        for name in ("plain", "bf16")
    }
    assert losses["bf16"][-1] < losses["bf16"][0]  # it trains
    assert losses["bf16"][-1] < 1.5 * losses["plain"][-1]


def test_gradient_accumulation_equals_the_full_batch_step(data_dir, tmp_path):
    """A deterministic objective (classifier without dropout or shifts): averaging the gradients
    of k micro-batches is the full-batch gradient, so k = 1 and 4 train to the same weights."""
    from configs import classifier

    factory = get_objective_factory("classifier")
    states = {}
    for accum in (1, 4):
        config = _config(
            classifier, data_dir, 6, grad_accum_steps=accum, max_translation=0,
            global_batch_size=32,
        )  # fmt: skip
        config.model.dropout_rate = 0.0
        states[accum] = loop.train_and_evaluate(config, str(tmp_path / str(accum)), factory)
    assert _relative_difference(states[4].params, states[1].params) < 1e-5
    config = _config(classifier, data_dir, 10, grad_accum_steps=3)
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        loop.train_and_evaluate(config, str(tmp_path / "bad"), factory)
