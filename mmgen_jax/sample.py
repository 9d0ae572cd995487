"""Generate samples from a trained generator workdir.

  python -m mmgen_jax.sample --workdir DIR --num_samples 100 --cfg_scale 2 --sampler ddim \
      --steps 50 [--labels 0,1,2 | --labels balanced] [--seed 0] [--eta 0] [--cfg_channels 3]
      [--classifier_workdir CLS_DIR] [--snap_to_codes true|false]

Writes `DIR/samples/<tag>.png` (a grid of images; `<tag>.gif` for video, `<tag>_<i>.wav` for
audio, `<tag>.txt` with one decoded sample per line for text), `<tag>.npz` (`samples` in
[-1, 1] or token ids, `labels`) and `<tag>.json` with every sampler setting, so a picture is
never separated from how it was made.
`--snap_to_codes` overrides, for a generator in a VQ-VAE's latent space, whether samples are
snapped to the nearest code before decoding (the run's `generator.snap_to_codes` otherwise).
With `--classifier_workdir`, also scores the samples (class accuracy, digits-FD against the
test split) and appends them to `DIR/metrics.jsonl` with `split: "sample"`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

from mmgen_jax import inference, xla_flags
from mmgen_jax.metrics import MetricWriter, present
from mmgen_jax.trainers.generator import GeneratorObjective


def parse_labels(spec: str | None, num_samples: int, num_classes: int) -> np.ndarray | None:
    """'balanced' (default for conditional models), 'random', or a comma-separated list."""
    if not num_classes:
        if spec not in (None, "none"):
            raise ValueError(f"--labels {spec} given, but the generator is unconditional")
        return None
    if spec in (None, "balanced"):
        return np.arange(num_samples) % num_classes
    labels = np.asarray([int(v) for v in spec.split(",")], np.int32)
    return np.resize(labels, num_samples)


def generate(workdir: str, args) -> tuple[np.ndarray, np.ndarray | None, dict, dict]:
    """Samples [N, *S, C] in [-1, 1], their labels, the settings used (with the step) and the
    dataset info of the run."""
    run = inference.load_trained(workdir)
    objective, variables = run.objective, dict(run.variables)
    labels = parse_labels(args.labels, args.num_samples, objective.num_classes)
    # Only a Gaussian generator over a VQ-VAE's code vectors can snap (a masked generator's
    # samples are code indices already; a KL autoencoder has no codebook).
    tokenizer = getattr(objective, "tokenizer", None)
    snappable = isinstance(objective, GeneratorObjective) and hasattr(tokenizer, "snap_to_codes")
    if args.snap_to_codes is not None:
        if not snappable:
            raise ValueError(
                f"--snap_to_codes {args.snap_to_codes} given, but {workdir!r} does not generate "
                "in a VQ-VAE's latent space"
            )
        tokenizer.snap_to_codes = args.snap_to_codes == "true"
    settings = objective.sampling_settings(
        args.sampler, args.steps, args.cfg_scale, args.eta, args.cfg_channels
    )
    objective.check_sampling_request(labels, settings["cfg_scale"])
    params = variables.pop("params")
    samples = []
    for start in range(0, args.num_samples, args.batch_size):
        count = min(args.batch_size, args.num_samples - start)
        batch_labels = None if labels is None else labels[start : start + count]
        rng = jax.random.fold_in(jax.random.PRNGKey(args.seed), start)
        samples.append(
            np.asarray(
                objective.sample(
                    params, variables, batch_labels, rng, num_samples=count, **settings
                )
            )
        )
    settings.update(seed=args.seed, num_samples=args.num_samples, workdir=workdir, step=run.step)
    settings.update(space=objective.space)
    if snappable:
        settings.update(snap_to_codes=tokenizer.snap_to_codes)
    if getattr(objective, "last_num_calls", None) is not None:
        settings.update(model_calls=objective.last_num_calls)  # denoiser calls, last batch
    return np.concatenate(samples), labels, settings, run.info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mmgen_jax.sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="a trained generator workdir")
    parser.add_argument("--num_samples", type=int, default=100)
    parser.add_argument("--cfg_scale", type=float, default=None)
    # ddim/ddpm: Gaussian generators; ancestral: masked-diffusion (token) generators.
    parser.add_argument("--sampler", choices=("ddim", "ddpm", "ancestral"), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--cfg_channels", type=int, default=None)
    parser.add_argument("--labels", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--tag", default=None, help="file name stem (default from settings)")
    parser.add_argument("--classifier_workdir", default=None)
    parser.add_argument("--snap_to_codes", choices=("true", "false"), default=None)
    args = parser.parse_args(argv)
    xla_flags.configure_for_cpu()
    try:
        samples, labels, settings, run_info = generate(args.workdir, args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    tag = args.tag or (
        f"{settings['sampler']}{settings['steps']}_cfg{settings['cfg_scale']:g}_seed{args.seed}"
    )
    out_dir = os.path.join(args.workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(
        os.path.join(out_dir, f"{tag}.npz"),
        samples=samples,
        labels=np.asarray([] if labels is None else labels),
    )
    per_row = int(np.max(labels)) + 1 if labels is not None else 10
    written = [os.path.join(out_dir, f"{tag}.{ext}") for ext in ("npz", "json")]
    if settings["space"] != "raw":  # raw samples (e.g. SD-VAE latents) are not pictures
        item = present.present(samples, min(per_row, 10), run_info)
        written += present.save(os.path.join(out_dir, tag), item)
    if args.classifier_workdir:
        from mmgen_jax.evaluation import score_samples

        scores = score_samples(args.classifier_workdir, samples, labels)
        settings.update(scores)
        numbers = {k: v for k, v in settings.items() if isinstance(v, int | float) and k != "step"}
        MetricWriter(args.workdir).write_scalars(settings["step"], "sample", numbers)
    with open(os.path.join(out_dir, f"{tag}.json"), "w") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
    print(f"wrote {len(samples)} samples: " + ", ".join(written))
    print(json.dumps(settings, sort_keys=True))


if __name__ == "__main__":
    main()
