"""Sample and evaluate: N samples from a generator workdir scored with the ADM evaluator suite.

  python -m mmgen_jax.evaluate --workdir DIT_DIR --num_samples 50000 --batch_size 256 \
      --sampler ddpm --steps 250 --cfg_scale 1.5 \
      --inception_weights pt_inception-2015-12-05-6726825d.pth \
      --reference VIRTUAL_imagenet256_labeled.npz

Generation is one jit-compiled function per batch that samples, quantises to uint8 the way the
official DiT `sample_ddp.py` does (`clip(127.5 x + 128, 0, 255)` truncated) and runs the
Inception network, with the batch split over every device of every host. Labels are balanced
(sample i has class i mod C) and batch b's noise comes from `fold_in(PRNGKey(seed), b)` drawn at
the global batch shape, so the samples do not depend on the number of devices or hosts.

Process 0 streams each finished batch's features (pool [B, 2048], spatial [B, 2023], bias-free
logits [B, 1008]) into a `metrics.fid.FeatureAccumulator`: running mean and scatter for FID and
sFID, running per-split sums for the Inception Score, so memory does not grow with the number
of samples; the pool activations precision/recall need go to `<out>/activations.f32` on disk.
The accumulator's state is saved atomically after every batch (`<out>/state.npz`), so a rerun
of the same command resumes after the last saved batch and ends with the same numbers (at most
the batch in flight is lost); a rerun with different settings is refused.

Writes `<out>/results.json` (every sampler setting and every score), `<out>/samples_stats.npz`
(the samples' statistics in the ADM reference format, reusable as a reference), a grid of the
first samples (`<out>/samples.png`) and one `split: "evaluate"` line in `<workdir>/metrics.jsonl`.
`<out>` defaults to `<workdir>/evaluations/<tag>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from mmgen_jax import inference, xla_flags
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.metrics import MetricWriter, fid, inception
from mmgen_jax.metrics.images import make_grid, save_png
from mmgen_jax.metrics.progress import Progress

__all__ = [
    "EvalSettings",
    "balanced_labels",
    "generate_features",
    "main",
    "to_uint8_like_dit",
]

# extract(variables, images uint8 [B, H, W, 3]) -> {'pool': [B, P], 'spatial': [B, S], ...}
ExtractFn = Callable[[Any, jax.Array], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Everything that determines the samples; a resumed evaluation must match it exactly."""

    workdir: str
    step: int
    num_samples: int
    batch_size: int
    seed: int
    sampler: str
    steps: int
    cfg_scale: float
    eta: float
    cfg_channels: int | None

    @property
    def num_batches(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def tag(self) -> str:
        return (
            f"{self.sampler}{self.steps}_cfg{self.cfg_scale:g}_seed{self.seed}_n{self.num_samples}"
        )


def balanced_labels(num_samples: int, num_classes: int) -> np.ndarray | None:
    """Class i mod C for sample i: every class gets N // C or N // C + 1 samples."""
    if not num_classes:
        return None
    return (np.arange(num_samples) % num_classes).astype(np.int32)


def to_uint8_like_dit(images: jax.Array) -> jax.Array:
    """[-1, 1] floats -> uint8 as the official DiT sampler saves them: clip(127.5 x + 128)."""
    return jnp.clip(127.5 * images + 128.0, 0.0, 255.0).astype(jnp.uint8)


def _check_resumable(out_dir: str, settings: EvalSettings) -> None:
    """Write `<out>/settings.json`, or check that the one already there matches."""
    path = os.path.join(out_dir, "settings.json")
    current = dataclasses.asdict(settings)
    if os.path.exists(path):
        with open(path) as file:
            saved = json.load(file)
        for key in sorted(set(saved) | set(current)):
            if saved.get(key) != current.get(key):
                raise ValueError(
                    f"{out_dir} holds an evaluation made with {key}={saved.get(key)!r}, not "
                    f"{current.get(key)!r}; use another --out or delete it to start over"
                )
        return
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w") as file:
            json.dump(current, file, indent=2, sort_keys=True)


def _global_labels(labels: np.ndarray, sharding) -> jax.Array:
    """A host array every process holds whole -> a global array sharded over the batch."""
    return jax.make_array_from_callback(labels.shape, sharding, lambda index: labels[index])


def _state_paths(out_dir: str) -> tuple[str, str]:
    return os.path.join(out_dir, "state.npz"), os.path.join(out_dir, "activations.f32")


def _new_accumulator(out_dir: str, dims: Mapping[str, int], split_size: int):
    return fid.FeatureAccumulator(
        _state_paths(out_dir)[1],
        split_size=split_size,
        pool_dim=dims["pool"],
        spatial_dim=dims["spatial"],
        num_classes=dims["logits_unbiased"],
    )


def generate_features(
    run: inference.TrainedRun,
    extract: ExtractFn,
    extractor_variables: Any,
    settings: EvalSettings,
    out_dir: str,
    *,
    split_size: int = fid.IS_SPLIT_SIZE,
    stop_after: int | None = None,
) -> fid.FeatureAccumulator | None:
    """Generate, quantise and featurise every batch not yet accumulated in `out_dir`.

    Returns the accumulator on process 0 (None elsewhere). Its state is saved after every
    batch, so an interruption loses at most the batch in flight. `stop_after` ends the loop
    after that many new batches (an interruption, for tests).
    """
    objective = run.objective
    if not hasattr(objective, "diffusion"):
        raise ValueError(f"{settings.workdir} is not a Gaussian diffusion (image) generator")
    if objective.space == "raw" and objective.latent_shape[-1] != 3:
        raise ValueError(
            f"{settings.workdir} samples {objective.latent_shape} latents in 'raw' space: attach "
            "a decoder (e.g. the imported SD-VAE) before evaluating pictures"
        )
    _check_resumable(out_dir, settings)
    mesh = sharding_lib.make_mesh(data=-1, fsdp=1)
    shards = sharding_lib.batch_shards(mesh)
    if settings.batch_size % shards:
        raise ValueError(
            f"--batch_size {settings.batch_size} is not divisible by the {shards} devices it "
            "is split over"
        )
    batch_sharding = sharding_lib.batch_sharding(mesh)
    variables = dict(run.variables)
    params = variables.pop("params")
    total = settings.num_batches
    labels = balanced_labels(total * settings.batch_size, objective.num_classes)
    sample = objective.sampling_function(
        settings.batch_size,
        sampler=settings.sampler,
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        eta=settings.eta,
        cfg_channels=settings.cfg_channels,
    )

    def step(params, model_state, extractor_variables, y, rng):
        images = to_uint8_like_dit(sample(params, model_state, y, rng))  # [B, H, W, C]
        if images.shape[-1] == 1:  # grey -> RGB, as image viewers show it
            images = jnp.repeat(images, 3, axis=-1)
        return images, dict(extract(extractor_variables, images))

    step = jax.jit(step, out_shardings=batch_sharding)
    accumulator = None
    done = 0
    state_path, _ = _state_paths(out_dir)
    if jax.process_index() == 0 and os.path.exists(state_path):
        accumulator = fid.FeatureAccumulator.restore(*_state_paths(out_dir))
        done = -(-accumulator.count // settings.batch_size)
    start = int(multihost_utils.broadcast_one_to_all(np.int32(done)))
    end = total if stop_after is None else min(total, start + stop_after)
    base_rng = jax.random.PRNGKey(settings.seed)
    progress = Progress(total, start_step=start, desc="evaluate")
    for index in range(start, end):
        batch = slice(index * settings.batch_size, (index + 1) * settings.batch_size)
        y = None if labels is None else _global_labels(labels[batch], batch_sharding)
        images, features = step(
            params, variables, extractor_variables, y, jax.random.fold_in(base_rng, index)
        )
        features = {k: sharding_lib.host_array(v) for k, v in features.items()}
        if index == 0:
            _save_grid(out_dir, sharding_lib.host_array(images)[:64])
        if jax.process_index() == 0:
            keep = min(settings.batch_size, settings.num_samples - index * settings.batch_size)
            features = {k: v[:keep] for k, v in features.items()}
            if accumulator is None:
                dims = {k: v.shape[-1] for k, v in features.items()}
                accumulator = _new_accumulator(out_dir, dims, split_size)
            accumulator.update(features)
            accumulator.save(state_path)
        progress.update(index + 1)
    progress.close()
    return accumulator


def _save_grid(out_dir: str, images: np.ndarray) -> None:
    if jax.process_index() == 0:
        save_png(os.path.join(out_dir, "samples.png"), make_grid(images, ncols=8))


def _default_out_dir(settings: EvalSettings) -> str:
    return os.path.join(settings.workdir, "evaluations", settings.tag())


def inception_extractor(weights_path: str) -> tuple[ExtractFn, Any]:
    """(extract, variables) of the FID InceptionV3 on uint8 images, ADM input convention."""
    module, variables = inception.load_inception(weights_path)

    def extract(variables, images):
        return module.apply(variables, inception.preprocess(images, "uint8", "adm"))

    return extract, variables


def load_reference(
    path: str, extract: ExtractFn, variables: Any, batch_size: int, cache_dir: str
) -> fid.ReferenceStatistics:
    """An ADM reference `.npz` with the pool activations precision/recall need.

    ADM's reference batches hold statistics and images (`arr_0`) but no activations; they are
    computed once through `extract` and cached as `<cache_dir>/reference_<name>.npz`.
    """
    reference = fid.load_reference(path)
    if reference.pool is not None:
        return reference
    name = os.path.splitext(os.path.basename(path))[0]
    cached = os.path.join(cache_dir, f"reference_{name}.npz")
    if os.path.exists(cached):
        return fid.load_reference(cached, require_activations=True)
    with np.load(path) as archive:
        if "arr_0" not in archive.files:
            return reference  # statistics only: FID and sFID, no precision/recall
    print(f"computing Inception activations of the reference images in {path}")
    features = jax.jit(extract)
    pool = []
    for images in fid.iterate_npz_images(path, batch_size):
        pool.append(np.asarray(features(variables, jnp.asarray(images))["pool"], np.float32))
    reference = dataclasses.replace(reference, pool=np.concatenate(pool))
    if jax.process_index() == 0:
        os.makedirs(cache_dir, exist_ok=True)
        fid.save_reference(cached, reference)
    return reference


def evaluate(
    args: argparse.Namespace, extractor: tuple[ExtractFn, Any] | None = None
) -> dict[str, Any]:
    """Runs the whole evaluation the CLI describes; returns the results (on every process).

    `extractor` replaces the Inception network (tests use a small stand-in).
    """
    run = inference.load_trained(args.workdir)
    sampling = run.objective.sampling_settings(
        args.sampler, args.steps, args.cfg_scale, args.eta, args.cfg_channels
    )
    run.objective.check_sampling_request(None, sampling["cfg_scale"])
    settings = EvalSettings(
        workdir=os.path.abspath(args.workdir),
        step=run.step,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        **sampling,
    )
    if settings.num_samples < 2:
        raise ValueError(f"--num_samples {settings.num_samples}: statistics need at least 2")
    out_dir = args.out or _default_out_dir(settings)
    if args.reference and not os.path.isfile(args.reference):
        raise FileNotFoundError(f"--reference {args.reference!r}: no such file")
    extract, variables = extractor or inception_extractor(args.inception_weights)
    reference = None
    if args.reference:  # before sampling: a bad reference fails in seconds, not hours
        cache = os.path.join(settings.workdir, "evaluations")
        reference = load_reference(args.reference, extract, variables, args.batch_size, cache)
    accumulator = generate_features(
        run, extract, variables, settings, out_dir, split_size=args.split_size
    )
    results: dict[str, Any] = {**dataclasses.asdict(settings), "out": out_dir}
    if jax.process_index() == 0:
        fid.save_reference(os.path.join(out_dir, "samples_stats.npz"), accumulator.reference())
        if reference is None:
            results["inception_score"] = accumulator.inception_score()
        else:
            results.update(fid.compute_metrics(accumulator, reference))
            results["reference"] = os.path.abspath(args.reference)
        with open(os.path.join(out_dir, "results.json"), "w") as file:
            json.dump(results, file, indent=2, sort_keys=True)
        numbers = {
            k: v
            for k, v in results.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"
        }
        with MetricWriter(settings.workdir) as writer:
            writer.write_scalars(settings.step, "evaluate", numbers)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mmgen_jax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="a generator workdir")
    parser.add_argument("--num_samples", type=int, default=50_000)
    parser.add_argument("--batch_size", type=int, default=250, help="global, over all devices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cfg_scale", type=float, default=None)
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--cfg_channels", type=int, default=None)
    parser.add_argument("--inception_weights", required=True, help="pt_inception-2015-12-05 file")
    parser.add_argument("--reference", default=None, help="ADM reference batch / statistics .npz")
    parser.add_argument("--out", default=None, help="default: <workdir>/evaluations/<tag>")
    parser.add_argument("--split_size", type=int, default=fid.IS_SPLIT_SIZE, help="IS split")
    parser.add_argument("--distributed", action="store_true", help="join a multi-host run")
    args = parser.parse_args(argv)
    xla_flags.configure_for_cpu()
    if args.distributed:
        sharding_lib.initialize_distributed()
    start = time.time()
    try:
        results = evaluate(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        sys.exit(f"error: {err}")
    if jax.process_index() == 0:
        print(json.dumps({**results, "wall_s": round(time.time() - start, 1)}, sort_keys=True))


if __name__ == "__main__":
    main()
