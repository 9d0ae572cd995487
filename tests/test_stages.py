"""The staged quickstart (tokenizer -> classifier -> latent DiT -> scored samples), tiny."""

import json
import os

import pytest

from mmgen_jax import config_lib
from mmgen_jax.metrics import read_metrics
from mmgen_jax.trainers import stages

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def test_quickstart_runs_every_stage_and_scores_samples(tmp_path, capsys):
    config = config_lib.load_config_file(os.path.join(CONFIGS, "quickstart.py"), "runlocal=True")
    assert tuple(config.stage_order) == ("tokenizer", "classifier", "generator")
    for name in config.stage_order:
        config.stages[name].data.data_dir = str(tmp_path / "tfds")
    workdir = str(tmp_path / "run")
    scores = stages.run_stages(config, workdir)

    # The generator used this run's own tokenizer.
    generator_config = json.load(open(os.path.join(workdir, "generator", "config.json")))
    assert generator_config["generator"]["tokenizer_workdir"] == os.path.join(workdir, "tokenizer")
    # 10 classes x 2 per class (runlocal), scored and recorded with the sampler settings.
    saved = json.load(open(os.path.join(workdir, "samples.json")))
    assert saved["num_samples"] == 20 and saved["sampler"] == "ddim"
    assert 0.0 <= scores["class_accuracy"] <= 1.0
    assert scores["frechet_distance"] > 0 and scores["frechet_distance_train_vs_test"] > 0
    assert scores["frechet_distance_ratio"] == pytest.approx(
        scores["frechet_distance"] / scores["frechet_distance_train_vs_test"]
    )
    sample_lines = read_metrics(os.path.join(workdir, "generator"), split="sample")
    assert sample_lines[-1]["class_accuracy"] == pytest.approx(scores["class_accuracy"])
    assert os.path.exists(os.path.join(workdir, "samples.png"))
    printed = capsys.readouterr().out
    assert "Run finished" in printed and "samples.png" in printed


def test_unknown_stage_in_order_is_an_error(tmp_path):
    config = config_lib.load_config_file(os.path.join(CONFIGS, "quickstart.py"), "runlocal=True")
    config.stage_order = ("tokenizer", "decoder")
    with pytest.raises(ValueError, match="decoder"):
        stages.run_stages(config, str(tmp_path))
