"""Multi-stage runs: tokenizer -> classifier -> generator -> samples, in one workdir.

A stages config (`config.trainer = 'stages'`) holds one full experiment config per stage in
`config.stages` (run in order, each in `<workdir>/<stage name>`), and a `config.final` section
saying how to sample and score at the end. A generator stage with an empty
`generator.tokenizer_workdir` uses the run's own tokenizer stage. Every stage resumes like a
single run, so re-running the command after an interruption continues where it stopped.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np

from mmgen_jax import evaluation, inference
from mmgen_jax.metrics import MetricWriter, present
from mmgen_jax.trainers import get_objective_factory, loop

logger = logging.getLogger(__name__)


def _stage_config(config: ml_collections.ConfigDict, name: str, workdir: str):
    stage = config.stages[name]
    if stage.trainer in ("generator", "masked") and stage.generator.space == "latent":
        if not stage.generator.tokenizer_workdir:
            stage.generator.tokenizer_workdir = os.path.join(workdir, config.final.tokenizer_stage)
    return stage


def _sample_and_score(config, workdir: str) -> dict[str, float]:
    """Sample `final.per_class` examples of every class (of an unconditional generator:
    `final.per_class` examples) from the generator stage, score them and save them with a grid
    of the first `final.grid_per_class` of each class (text: every sample, decoded)."""
    final = config.final
    generator_dir = os.path.join(workdir, final.generator_stage)
    run = inference.load_trained(generator_dir)
    num_classes = run.objective.num_classes
    labels = np.repeat(np.arange(num_classes), final.per_class) if num_classes else None
    num_samples = final.per_class * max(num_classes, 1)
    variables = dict(run.variables)
    params = variables.pop("params")
    samples = np.asarray(
        run.objective.sample(
            params, variables, labels, jax.random.PRNGKey(final.seed), num_samples=num_samples
        )
    )
    shown = min(final.grid_per_class, final.per_class)
    grid = samples.reshape(max(num_classes, 1), final.per_class, *samples.shape[1:])[:, :shown]
    if run.info.get("modality") == "text":
        grid = samples  # decoded text: one line per sample, all of them
    item = present.present(grid.reshape(-1, *samples.shape[1:]), shown, run.info)
    present.save(os.path.join(workdir, "samples"), item)
    np.savez_compressed(
        os.path.join(workdir, "samples.npz"),
        samples=samples,
        labels=np.zeros(0, np.int32) if labels is None else labels,
    )
    scores = evaluation.score(
        final.get("scorer", "classifier"),
        samples,
        labels,
        workdir=workdir,
        final=final,
        info=run.info,
    )
    settings = dict(run.objective.sampling_settings(), seed=final.seed, num_samples=num_samples)
    if getattr(run.objective, "last_num_calls", None) is not None:
        settings["model_calls"] = run.objective.last_num_calls  # denoiser calls per batch
    with open(os.path.join(workdir, "samples.json"), "w") as f:
        json.dump({**settings, **scores}, f, indent=2, sort_keys=True)
    numbers = {k: v for k, v in {**settings, **scores}.items() if isinstance(v, int | float)}
    MetricWriter(generator_dir).write_scalars(run.step, "sample", numbers)
    return scores


def run_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train every stage in order, then sample and score; returns the scores."""
    timings = {}
    unknown = [name for name in config.stage_order if name not in config.stages]
    if unknown:
        raise ValueError(f"stage_order names {unknown}, not in config.stages")
    for name in config.stage_order:
        stage = _stage_config(config, name, workdir)
        start = time.perf_counter()
        logger.info("stage %s -> %s", name, os.path.join(workdir, name))
        loop.train_and_evaluate(
            stage, os.path.join(workdir, name), get_objective_factory(stage.trainer)
        )
        timings[name] = time.perf_counter() - start
    start = time.perf_counter()
    scores = _sample_and_score(config, workdir)
    timings["sample_and_score"] = time.perf_counter() - start
    if jax.process_index() == 0:
        _print_summary(config, workdir, scores, timings)
    return scores


def _print_summary(config, workdir: str, scores: dict, timings: dict) -> None:
    lines = ["", f"Run finished: {workdir}"]
    for name, seconds in timings.items():
        lines.append(f"  {name:<18} {seconds:7.1f} s")
    lines.append("Sample scores: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(scores.items())))
    shown = sorted(glob.glob(os.path.join(workdir, "samples*.*")))
    lines.append(f"  samples          {', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}")
    for name in config.stage_order:
        stage_dir = os.path.join(workdir, name)
        lines.append(f"  {name:<16} {stage_dir}/{{metrics.jsonl,images/,checkpoints/}}")
    print("\n".join(lines), flush=True)
