"""Benchmark a DiT: train step, forward pass and guided DDIM sampling, against the matmul peak.

  python experiments/bench_dit.py [--model DiT-S/2] [--input 32,32,4] [--batch 8]
      [--sample_steps 50] [--cfg_scale 1.5] [--dtype float32] [--repeats 5] [--json out.json]
      [--hidden_size N] [--depth N] [--num_heads N] [--patch_size N]   (override the zoo model)

Measured in one run (ratios are what compare across noisy machines):
  * peak fp32 matmul FLOP/s of the default device (best of three rounds of 2048^2 matmuls);
  * train step (loss + grads + AdamW update of the Gaussian-diffusion hybrid loss): compile time,
    images/s, FLOPs from XLA's cost analysis, achieved FLOP/s and its ratio to the matmul peak,
    compiled memory (arguments + temporaries), and from a profiler trace the share of the step
    spent in matmul kernels, with the ten most expensive ops;
  * forward pass: images/s and ratio to peak;
  * `--sample_steps` DDIM steps with classifier-free guidance (batch doubled): seconds per batch;
  * peak resident memory of the process.
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmgen_jax import benchmarking, xla_flags
from mmgen_jax.diffusion.gaussian import GaussianDiffusion, betas_for_schedule, space_timesteps
from mmgen_jax.diffusion.samplers import ddim_sample
from mmgen_jax.models.dit import make_dit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="DiT-S/2")
    parser.add_argument("--input", default="32,32,4", help="per-example shape, channels last")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--sample_steps", type=int, default=50)
    parser.add_argument("--cfg_scale", type=float, default=1.5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="bench_dit.json")
    parser.add_argument(
        "--plain_xla", action="store_true", help="skip mmgen_jax.xla_flags (to compare)"
    )
    for name in ("hidden_size", "depth", "num_heads", "patch_size"):
        parser.add_argument(f"--{name}", type=int, help=f"override the zoo model's {name}")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.plain_xla:
        xla_flags.configure_for_cpu()
    shape = tuple(int(v) for v in args.input.split(","))
    overrides = {
        name: getattr(args, name)
        for name in ("hidden_size", "depth", "num_heads", "patch_size")
        if getattr(args, name) is not None
    }
    model = make_dit(
        args.model,
        **overrides,
        in_channels=shape[-1],
        num_classes=args.num_classes,
        dtype=jnp.dtype(args.dtype),
    )
    diffusion = GaussianDiffusion.from_betas(betas_for_schedule("linear"), learn_sigma=True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, args.num_classes, args.batch), jnp.int32)
    t = jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, t, y)["params"]
    params = jax.tree.map(
        lambda p: getattr(p, "value", p), params, is_leaf=lambda p: hasattr(p, "value")
    )
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    tx = optax.adamw(1e-4, weight_decay=0.0)
    opt_state = tx.init(params)

    def train_step(params, opt_state, x, y, key):
        t_key, noise_key, drop_key = jax.random.split(key, 3)

        def loss_fn(p):
            def model_fn(x_t, timesteps, labels):
                return model.apply(
                    {"params": p},
                    x_t,
                    timesteps,
                    labels,
                    train=True,
                    rngs={"label_dropout": drop_key},
                )

            t = diffusion.sample_timesteps(t_key, x.shape[0])
            noise = jax.random.normal(noise_key, x.shape)
            return jnp.mean(diffusion.training_losses(model_fn, x, t, noise, y)["loss"])

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.PRNGKey(1)
    train, compile_s = benchmarking.compile_timed(
        jax.jit(train_step, donate_argnums=(0, 1)), params, opt_state, x, y, key
    )
    train_flops = benchmarking.flops_of(train)
    train_memory = benchmarking.memory_of(train)
    state = [params, opt_state]

    def call_train():
        state[0], state[1], loss = train(state[0], state[1], x, y, key)
        return loss

    train_s = benchmarking.time_calls(call_train, args.repeats)
    breakdown = benchmarking.op_time_breakdown(call_train, repeats=2)

    forward = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y))
    forward_c, _ = benchmarking.compile_timed(forward, state[0], x, t, y)
    forward_flops = benchmarking.flops_of(forward_c)
    forward_s = benchmarking.time_calls(lambda: forward_c(state[0], x, t, y), args.repeats)

    respaced = diffusion.respace(space_timesteps(1000, f"ddim{args.sample_steps}"))
    sampler = jax.jit(
        functools.partial(
            lambda p, y, k: ddim_sample(
                lambda x_t, ts, labels: model.apply({"params": p}, x_t, ts, labels),
                respaced,
                (args.batch, *shape),
                k,
                y=y,
                cfg_scale=args.cfg_scale,
                null_label=args.num_classes,
            )
        )
    )
    sampler_c, sample_compile_s = benchmarking.compile_timed(sampler, state[0], y, key)
    sample_s = benchmarking.time_calls(lambda: sampler_c(state[0], y, key), 1)

    peak = benchmarking.matmul_peak()
    results = {
        "model": args.model + "".join(f",{k}={v}" for k, v in overrides.items()),
        "input": list(shape),
        "batch": args.batch,
        "dtype": args.dtype,
        "params": n_params,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "matmul_peak_gflops": peak / 1e9,
        "train_compile_s": compile_s,
        "train_step_s": train_s,
        "train_images_per_s": args.batch / train_s,
        "train_gflop_per_step": train_flops / 1e9,
        "train_gflops": train_flops / train_s / 1e9,
        "train_fraction_of_peak": train_flops / train_s / peak,
        "train_compiled_memory_mb": sum(train_memory.values()) / 2**20,
        # From a profiler trace: the share of op time in matmul kernels, and the FLOP/s those
        # kernels reach if they did all the step's FLOPs (the elementwise rest is memory-bound).
        "train_matmul_share_of_op_time": breakdown["matmul_ms"] / max(breakdown["op_ms"], 1e-9),
        "train_matmul_kernels_fraction_of_peak": (
            train_flops / (breakdown["matmul_ms"] / 1e3) / peak if breakdown["matmul_ms"] else 0.0
        ),
        "train_top_ops_ms": breakdown["top_ops"],
        "forward_images_per_s": args.batch / forward_s,
        "forward_fraction_of_peak": forward_flops / forward_s / peak,
        "sample_steps": args.sample_steps,
        "cfg_scale": args.cfg_scale,
        "sample_compile_s": sample_compile_s,
        "sample_s_per_batch": sample_s,
        "peak_rss_mb": benchmarking.peak_rss_bytes() / 2**20,
    }
    width = max(map(len, results))
    for name, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:<{width}}  {shown}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
