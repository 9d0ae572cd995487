"""The training loop end to end on the embedded digits, on 8 fake CPU devices."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from configs import vqvae
from mmgen_jax.metrics import read_metrics
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.tokenizer import TokenizerObjective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, **training):
    config = vqvae.get_config("runlocal=True")
    config.data.data_dir = data_dir
    for key, value in training.items():
        config.training[key] = value
    return config


def test_training_reduces_loss_on_8_devices(data_dir, tmp_path):
    config = _config(data_dir, total_steps=40, log_every=10, eval_every=100, checkpoint_every=100)
    config.optimizer.warmup_steps = 5
    state = loop.train_and_evaluate(config, str(tmp_path), TokenizerObjective)
    assert int(state.step) == 40
    # The batch really is spread over the 8 devices of the mesh.
    assert len(state.params["encoder"]["stem"]["kernel"].sharding.device_set) == 8
    train = read_metrics(str(tmp_path), split="train")
    assert [m["step"] for m in train] == [10, 20, 30, 40]
    assert train[-1]["reconstruction_mse"] < 0.5 * train[0]["reconstruction_mse"]
    test = read_metrics(str(tmp_path), split="test")
    assert len(test) == 1 and test[0]["step"] == 40
    assert {"psnr", "ssim", "codebook_usage", "perplexity", "dead_codes"} <= set(test[0])
    assert os.path.exists(tmp_path / "images" / "test_reconstructions_0000040.png")
    assert json.load(open(tmp_path / "config.json"))["trainer"] == "tokenizer"
    # The dataset description is saved too, so tools need not open the dataset again.
    info = json.load(open(tmp_path / "dataset_info.json"))
    assert info == {
        "shape": [8, 8, 1],
        "num_classes": 10,
        "num_examples": {"train": 1300, "validation": 200, "test": 297},
    }


def test_rerun_resumes_from_the_latest_checkpoint(data_dir, tmp_path):
    loop.train_and_evaluate(_config(data_dir, total_steps=4), str(tmp_path), TokenizerObjective)
    state = loop.train_and_evaluate(
        _config(data_dir, total_steps=8), str(tmp_path), TokenizerObjective
    )
    assert int(state.step) == 8
    steps = [m["step"] for m in read_metrics(str(tmp_path), split="train")]
    assert steps == [2, 4, 6, 8]  # continued at 5, nothing restarted at 1
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [6, 8]


def test_checkpoint_from_another_model_fails_before_training(data_dir, tmp_path):
    loop.train_and_evaluate(_config(data_dir, total_steps=3), str(tmp_path), TokenizerObjective)
    lines = len(read_metrics(str(tmp_path)))
    other = _config(data_dir, total_steps=6)
    other.model.latent_dim = 24
    with pytest.raises(ValueError, match="written by a different model"):
        loop.train_and_evaluate(other, str(tmp_path), TokenizerObjective)
    assert len(read_metrics(str(tmp_path))) == lines


class _NaNObjective(TokenizerObjective):
    def loss(self, params, model_state, batch, rng):
        loss, aux = super().loss(params, model_state, batch, rng)
        return loss * jnp.nan, aux


def test_nan_loss_stops_naming_the_step_and_saves_nothing(data_dir, tmp_path):
    with pytest.raises(loop.NonFiniteLossError, match="at step 1;"):
        loop.train_and_evaluate(_config(data_dir), str(tmp_path), _NaNObjective)
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_image_size_not_divisible_fails_before_anything_is_written(data_dir, tmp_path):
    config = _config(data_dir)
    config.data.image_size = 7
    with pytest.raises(ValueError, match=r"not divisible by the total downsampling factor 2"):
        loop.train_and_evaluate(config, str(tmp_path / "run"), TokenizerObjective)
    assert not os.path.exists(tmp_path / "run")


def test_unknown_dataset_is_a_clear_error(data_dir, tmp_path):
    config = _config(data_dir)
    config.data.name = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        loop.train_and_evaluate(config, str(tmp_path / "run"), TokenizerObjective)


def _cli(*args, data_dir):
    env = dict(os.environ, TFDS_DATA_DIR=data_dir)
    return subprocess.run(
        [sys.executable, "-m", "mmgen_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_trains_resumes_and_rejects_unknown_keys(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = "--config=configs/vqvae.py:runlocal=True"
    bad = _cli(config, f"--workdir={workdir}", "--config.training.totl_steps=3", data_dir=data_dir)
    assert bad.returncode != 0 and "totl_steps" in bad.stderr
    assert not os.path.exists(workdir)

    steps = "--config.training.total_steps="
    first = _cli(config, f"--workdir={workdir}", f"{steps}3", data_dir=data_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _cli(config, f"--workdir={workdir}", f"{steps}5", data_dir=data_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Resuming from" in second.stderr
    records = read_metrics(workdir)
    assert [m["step"] for m in records if m["split"] == "train"] == [2, 3, 4, 5]
    assert {m["split"] for m in records} == {"train", "eval", "test"}
    assert np.isfinite([m["psnr"] for m in records if m["split"] == "test"]).all()


def test_ema_decay_warms_up_then_saturates():
    assert float(loop.ema_decay_at(jnp.array(0), 0.999)) == pytest.approx(0.1)
    assert float(loop.ema_decay_at(jnp.array(90), 0.999)) == pytest.approx(91 / 100)
    assert float(loop.ema_decay_at(jnp.array(10**6), 0.999)) == pytest.approx(0.999)
