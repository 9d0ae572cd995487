"""Video convolutions on this backend: full 3-D kernels against per-frame (1, k, k) kernels.

  python experiments/bench_conv.py [--batch 16] [--frames 8] [--size 8] [--channels 32 64]

For each channel count, times forward + backward (gradient of the sum of squares with respect
to input and kernel) of a 'SAME' convolution on [B, T, H, W, C] with
  3d-3x3x3   a (3, 3, 3) kernel (what the video tokenizer does with kernel_size=3),
  3d-1x3x3   a (1, 3, 3) kernel given to the 3-D convolution as it is,
  folded     the same (1, 3, 3) kernel as `layers.conv` runs it: frames folded into the batch,
             a 2-D convolution (kernel_size=(1, 3, 3) in the tokenizer),
and prints FLOP/s (XLA's count of the compiled function) against the fp32 matmul peak that the
same run measures, so only ratios measured together are compared.
"""

from __future__ import annotations

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmgen_jax import benchmarking
from mmgen_jax.models.layers import conv


def _loss_and_grad(layer):
    def loss(params, x):
        return jnp.sum(layer.apply({"params": params}, x) ** 2)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=8, help="frame height = width")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    peak = benchmarking.matmul_peak()
    print(f"{jax.devices()[0].platform}: fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'channels':>8} {'conv':>9} {'ms':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'of peak':>7}")
    for channels in args.channels:
        shape = (args.batch, args.frames, args.size, args.size, channels)
        x = jax.random.normal(jax.random.PRNGKey(0), shape)
        # 'folded' is what layers.conv builds for (1, 3, 3); the other two keep a 3-D kernel.
        layers = {
            "3d-3x3x3": conv(channels, 3, 3),
            "3d-1x3x3": conv(channels, 3, 3).clone(kernel_size=(1, 3, 3)),
            "folded": conv(channels, 3, (1, 3, 3)),
        }
        for name, layer in layers.items():
            params = nn.unbox(layer.init(jax.random.PRNGKey(1), x))["params"]
            step = _loss_and_grad(layer)
            compiled, _ = benchmarking.compile_timed(step, params, x)
            flops = benchmarking.flops_of(compiled)
            seconds = benchmarking.time_calls(functools.partial(compiled, params, x), args.repeats)
            achieved = flops / seconds
            print(
                f"{channels:>8} {name:>9} {seconds * 1e3:8.2f} {flops / 1e9:7.3f} "
                f"{achieved / 1e9:8.1f} {achieved / peak:7.1%}"
            )


if __name__ == "__main__":
    main()
