"""Checks of the FID statistics pipeline that need no network: halves of one set, a scipy reference.

  python experiments/fid_sanity.py [--dims 64,2048] [--num 10000] [--chunk 500]

For post-ReLU-like features (a random linear map of Gaussians, rectified) of N examples, the
two disjoint halves are streamed chunk by chunk through `frechet.RunningStatistics` and their
Fréchet distance is compared with a direct scipy computation from the raw features
(`np.cov` + `scipy.linalg.sqrtm`), beside the distance to the same half with its mean moved by
0.1 and to a different distribution. The halves' distance is the finite-sample floor (it grows
with D^2 / N), not zero; what must hold is |streamed - scipy| at round-off and halves << others.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.linalg

from mmgen_jax.metrics import frechet


def streamed(features: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    running = frechet.RunningStatistics(features.shape[1])
    for start in range(0, len(features), chunk):
        running.update(features[start : start + chunk])
    return running.statistics()


def scipy_reference(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(c1 + c2 - 2 * root))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", default="64,2048")
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    for dim in (int(d) for d in args.dims.split(",")):
        mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
        features = np.maximum(rng.normal(size=(args.num, dim)) @ mixing + 0.5, 0.0)
        a, b = features[: args.num // 2], features[args.num // 2 :]
        (m1, s1), (m2, s2) = streamed(a, args.chunk), streamed(b, args.chunk)
        halves = frechet.frechet_distance(m1, s1, m2, s2)
        reference = scipy_reference(a, b)
        shifted = frechet.frechet_distance(m1, s1, m2 + 0.1, s2)
        other = np.maximum(rng.normal(size=(args.num // 2, dim)) @ mixing, 0.0)
        different = frechet.frechet_distance(m1, s1, other.mean(0), np.cov(other, rowvar=False))
        print(
            f"D={dim}, {len(a)} + {len(b)} examples: FID(halves) = {halves:.6g}, scipy "
            f"{reference:.6g}, |difference| = {abs(halves - reference):.1e}; FID to the half "
            f"with mean + 0.1: {shifted:.4g}; to another distribution: {different:.4g}"
        )


if __name__ == "__main__":
    main()
