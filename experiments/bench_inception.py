"""Benchmark the evaluator: Inception throughput and the memory of streamed FID statistics.

  python experiments/bench_inception.py [--batch 32] [--image_size 299] [--repeats 3]
      [--samples 1000,10000] [--pipeline_images 256] [--weights pt_inception.pth]

Measured in one run, on the default JAX device:
  * InceptionV3 images/s on uint8 images of `--image_size` (ADM convention, resize included when
    the size is not 299), after compilation; random weights unless `--weights` is given (the
    speed does not depend on them);
  * `FeatureAccumulator` fed random features of 1K and 10K samples (pool activations appended
    to a file on disk): peak Python-heap use (tracemalloc, which sees NumPy buffers) and
    resident-memory growth during the updates, which should not depend on the sample count,
    then the heap peak of computing FID, sFID and IS from the accumulated state;
  * the whole extract + accumulate path on `--pipeline_images` random images: resident memory
    after the first and the last batch;
  * improved precision/recall of two random sets of `--pr_samples` 2048-d features (k-NN radii
    of both and the cross test: about 3 x N^2 x 2048 x 2 FLOPs; 50K samples against ADM's 10K
    reference batch is ~35x the work of 5K against 5K).
Imports no TensorFlow, so it runs where only JAX is installed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

from mmgen_jax.metrics import fid, inception


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", default="1000,10000", help="sample counts to accumulate")
    parser.add_argument("--feature_batch", type=int, default=250)
    parser.add_argument("--pipeline_images", type=int, default=256)
    parser.add_argument("--pr_samples", type=int, default=5000)
    parser.add_argument("--weights", help="pytorch-fid weight file (default: random weights)")
    return parser.parse_args(argv)


def resident_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def inception_variables(weights: str | None):
    if weights:
        return inception.load_inception(weights)[1]
    shape = (1, inception.INCEPTION_SIZE, inception.INCEPTION_SIZE, 3)
    return jax.jit(inception.InceptionV3().init)(jax.random.key(0), jnp.zeros(shape))


def random_images(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def bench_throughput(variables, args) -> dict:
    images = random_images(np.random.default_rng(0), args.batch, args.image_size)
    start = time.perf_counter()
    jax.block_until_ready(inception.extract_features(variables, images))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(inception.extract_features(variables, images))
    seconds = (time.perf_counter() - start) / args.repeats
    return {
        "first_call_s": compile_s,
        "batch_s": seconds,
        "images_per_s": args.batch / seconds,
    }


def random_features(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    return {
        "pool": rng.gamma(1.0, 0.3, (batch, fid.POOL_DIM)).astype(np.float32),
        "spatial": rng.gamma(1.0, 0.5, (batch, fid.SPATIAL_DIM)).astype(np.float32),
        "logits_unbiased": rng.standard_normal((batch, fid.NUM_CLASSES)).astype(np.float32),
    }


def bench_accumulator(num_samples: int, feature_batch: int, directory: str) -> dict:
    rng = np.random.default_rng(num_samples)
    batches = [random_features(rng, feature_batch) for _ in range(2)]  # reused: no growth here
    rss_before = resident_mib()
    tracemalloc.start()
    accumulator = fid.FeatureAccumulator(f"{directory}/pool_{num_samples}.f32")
    start = time.perf_counter()
    for index in range(num_samples // feature_batch):
        accumulator.update(batches[index % 2])
    seconds = time.perf_counter() - start
    _, update_peak = tracemalloc.get_traced_memory()
    rss_growth = resident_mib() - rss_before
    tracemalloc.reset_peak()
    metrics = fid.compute_metrics(accumulator, accumulator.statistics())  # self-FID: ~0
    _, metrics_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "samples": accumulator.count,
        "update_s_per_1k": seconds / accumulator.count * 1000,
        "heap_peak_updates_mib": update_peak / 2**20,
        "rss_growth_updates_mib": rss_growth,
        "heap_peak_metrics_mib": metrics_peak / 2**20,
        "self_fid": metrics["fid"],
    }


def bench_pipeline(variables, args, directory: str) -> dict:
    rng = np.random.default_rng(1)
    accumulator = fid.FeatureAccumulator(f"{directory}/pipeline.f32")
    rss = []
    for _ in range(max(1, args.pipeline_images // args.batch)):
        images = random_images(rng, args.batch, args.image_size)
        features = jax.device_get(inception.extract_features(variables, images))
        accumulator.update(features)
        rss.append(resident_mib())
    return {"images": accumulator.count, "rss_first_mib": rss[0], "rss_last_mib": rss[-1]}


def bench_precision_recall(num_samples: int) -> dict:
    rng = np.random.default_rng(2)
    reference = rng.gamma(1.0, 0.3, (num_samples, fid.POOL_DIM)).astype(np.float32)
    samples = rng.gamma(1.0, 0.3, (num_samples, fid.POOL_DIM)).astype(np.float32)
    start = time.perf_counter()
    precision, recall = fid.precision_recall(reference, samples)
    return {"seconds": time.perf_counter() - start, "precision": precision, "recall": recall}


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {jax.device_count()} device(s)")
    variables = inception_variables(args.weights)
    results = {"throughput": bench_throughput(variables, args)}
    t = results["throughput"]
    print(
        f"InceptionV3 {args.image_size}px uint8, batch {args.batch}: {t['images_per_s']:.1f} "
        f"images/s ({t['batch_s']:.2f} s/batch; first call {t['first_call_s']:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as directory:
        for count in (int(value) for value in args.samples.split(",") if value):
            stats = bench_accumulator(count, args.feature_batch, directory)
            results[f"accumulate_{count}"] = stats
            print(
                f"FeatureAccumulator, {stats['samples']} samples: updates: heap peak "
                f"{stats['heap_peak_updates_mib']:.1f} MiB, RSS growth "
                f"{stats['rss_growth_updates_mib']:.1f} MiB, {stats['update_s_per_1k']:.2f} s "
                f"per 1K samples; FID/sFID/IS: heap peak {stats['heap_peak_metrics_mib']:.1f} "
                f"MiB; self-FID {stats['self_fid']:.2e}"
            )
        if args.pipeline_images:
            stats = bench_pipeline(variables, args, directory)
            results["pipeline"] = stats
            print(
                f"extract + accumulate, {stats['images']} images: RSS {stats['rss_first_mib']:.0f} "
                f"MiB after the first batch, {stats['rss_last_mib']:.0f} MiB after the last"
            )
    if args.pr_samples:
        stats = bench_precision_recall(args.pr_samples)
        results["precision_recall"] = stats
        print(
            f"precision/recall of {args.pr_samples} vs {args.pr_samples} features: "
            f"{stats['seconds']:.1f} s (precision {stats['precision']:.3f}, recall "
            f"{stats['recall']:.3f})"
        )
    print(f"tensorflow imported: {'tensorflow' in sys.modules}")
    return results


if __name__ == "__main__":
    main()
