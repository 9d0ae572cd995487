"""Measurement helpers for the benchmark scripts in `experiments/`.

Machines (and shared CPUs in particular) are noisy, so benchmarks report ratios taken in one run:
achieved FLOP/s of a compiled step over the peak matmul FLOP/s measured by the same process
moments before. Timings block on the results and exclude compilation, which is timed apart.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def matmul_peak(size: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    """FLOP/s of a square `size` matmul on the default device: the reference for ratios."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(3):  # best of three rounds: the least disturbed by other processes
        start = time.perf_counter()
        for _ in range(repeats):
            out = matmul(a)
        out.block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def compile_timed(jitted: Any, *args) -> tuple[Any, float]:
    """(compiled executable, seconds spent lowering and compiling) of a `jax.jit` function."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def flops_of(compiled) -> float:
    """FLOPs of one call of a compiled executable, from XLA's cost analysis (nan if unknown)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def memory_of(compiled) -> dict[str, float]:
    """Bytes of arguments, outputs and temporaries of a compiled executable (if reported)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    return {name: float(getattr(analysis, name, 0)) for name in fields}


def time_calls(call: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Mean seconds per call of `call()`, blocking on its result, after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(call())
    start = time.perf_counter()
    for _ in range(repeats):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def peak_rss_bytes() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


MATMUL_OP_MARKERS = ("dot", "ynn", "onednn", "conv", "gemm", "matmul", "cublas", "cutlass")


def op_time_breakdown(call: Callable[[], Any], repeats: int = 3) -> dict[str, Any]:
    """Where a compiled call spends its time, from a `jax.profiler` trace of `repeats` calls.

    Returns per-call milliseconds of the XLA ops named in the trace, split into matmul-like
    kernels (names containing one of `MATMUL_OP_MARKERS`: dots, convolutions, library GEMMs)
    and the rest (elementwise and reduction fusions, copies), plus the ten most expensive op
    names. It explains a low FLOP/s ratio: the FLOPs are in the matmuls, the rest is memory-bound
    work. Empty figures when the backend's trace names no XLA ops.
    """
    import collections
    import glob
    import gzip
    import json
    import os
    import re
    import tempfile

    jax.block_until_ready(call())  # compiled and warm before tracing
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory)
        try:
            for _ in range(repeats):
                out = call()
            jax.block_until_ready(out)
        finally:
            jax.profiler.stop_trace()
        traces = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
        events = []
        for path in traces:
            with gzip.open(path) as f:
                events += json.load(f).get("traceEvents", [])
    per_op: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        # XLA ops appear as HLO instruction names (`fusion.3`, `ynn_fusion.12`, `dot.1`).
        if event.get("ph") != "X" or not re.fullmatch(r"[a-z_]+(\.\d+)?", name):
            continue
        per_op[re.sub(r"\.\d+$", "", name)] += event.get("dur", 0) / 1e3 / repeats
    matmul = sum(ms for name, ms in per_op.items() if any(m in name for m in MATMUL_OP_MARKERS))
    total = sum(per_op.values())
    return {
        "op_ms": total,
        "matmul_ms": matmul,
        "other_ms": total - matmul,
        "top_ops": [(name, round(ms, 2)) for name, ms in per_op.most_common(10)],
    }
