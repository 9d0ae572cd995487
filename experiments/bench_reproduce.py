"""What a DiT paper reproduction costs on this machine: sampling, VAE decoding and Inception.

  python experiments/bench_reproduce.py [--model DiT-XL/2] [--image_size 256] [--batch 64]
      [--steps 250] [--timed_steps 25] [--dtype bfloat16] [--num_samples 50000] [--json out.json]

Random weights, the real shapes: the guided DDPM loop of `--model` over SD-VAE latents
(image_size / 8, 4 channels; classifier-free guidance doubles the batch), the SD-VAE decoder
(`models.kl_autoencoder`, fp32 as the official sampler runs it, `--decode_batch` latents at
once) and the FID InceptionV3 (`metrics.inception`, fp32, uint8 images resized to 299 the ADM
way). Each is timed per batch
after compilation; the sampling loop is timed over `--timed_steps` steps of a respaced process
(every step costs the same model call) and scaled to `--steps`. The estimate of a whole
`python -m mmgen_jax.evaluate` run is num_samples / batch x (sampling + decoding + Inception)
on one device. The bf16 matmul peak measured in the same run puts the DiT's achieved FLOP/s in
proportion. Imports neither TensorFlow nor the data pipeline, so it runs on any JAX install.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from mmgen_jax import benchmarking, xla_flags
from mmgen_jax.diffusion.gaussian import GaussianDiffusion, betas_for_schedule, space_timesteps
from mmgen_jax.diffusion.samplers import ddpm_sample
from mmgen_jax.metrics import inception
from mmgen_jax.models.dit import make_dit
from mmgen_jax.models.kl_autoencoder import SD_VAE_SCALE, AutoencoderKL, decode_in_chunks


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="DiT-XL/2")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--timed_steps", type=int, default=25)
    parser.add_argument("--cfg_scale", type=float, default=1.5)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--num_samples", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vae_channels", default="128,256,512,512", help="SD-VAE widths")
    parser.add_argument("--decode_batch", type=int, default=32, help="latents decoded at once")
    parser.add_argument("--json", default="bench_reproduce.json")
    return parser.parse_args(argv)


def _timed(name: str, jitted, args, repeats: int) -> dict[str, float]:
    compiled, compile_s = benchmarking.compile_timed(jitted, *args)
    seconds = benchmarking.time_calls(lambda: compiled(*args), repeats)
    flops = benchmarking.flops_of(compiled)
    print(f"  {name}: compile {compile_s:.1f} s, {seconds * 1e3:.1f} ms per call", flush=True)
    return {"compile_s": compile_s, "seconds": seconds, "flops": flops}


def main(argv=None) -> dict:
    args = parse_args(argv)
    xla_flags.configure_for_cpu()
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} devices")
    peak = benchmarking.matmul_peak(4096 if device.platform != "cpu" else 1024, dtype=dtype)
    print(f"{args.dtype} matmul peak: {peak / 1e12:.1f} TFLOP/s")
    latent = (args.image_size // 8, args.image_size // 8, 4)
    batch = args.batch
    rng = jax.random.PRNGKey(0)
    results: dict = {
        "device": device.device_kind,
        "platform": device.platform,
        "model": args.model,
        "image_size": args.image_size,
        "batch": batch,
        "dtype": args.dtype,
        "matmul_peak_flops": peak,
    }

    # DiT: guided DDPM steps over the latents.
    dit = make_dit(args.model, in_channels=4, num_classes=1000, learn_sigma=True, dtype=dtype)
    dit_params = jax.jit(dit.init)(
        rng, jnp.zeros((1, *latent)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32)
    )["params"]
    base = GaussianDiffusion.from_betas(betas_for_schedule("linear", 1000), learn_sigma=True)
    timed = base.respace(space_timesteps(1000, [args.timed_steps]))
    labels = jnp.arange(batch, dtype=jnp.int32) % 1000

    def sample(params, y, key):
        model_fn = lambda x, t, c: dit.apply({"params": params}, x, t, c)
        return ddpm_sample(
            model_fn,
            timed,
            (batch, *latent),
            key,
            y=y,
            cfg_scale=args.cfg_scale,
            null_label=1000,
            cfg_channels=3,
        )

    print(f"{args.model}, {args.timed_steps} guided DDPM steps, batch {batch}:")
    loop = _timed("sampling", jax.jit(sample), (dit_params, labels, rng), args.repeats)
    step_s = loop["seconds"] / args.timed_steps
    # XLA's cost analysis does not multiply a loop body by its trip count, so the FLOPs of one
    # step are those of one guided model call (conditional and unconditional halves together).
    forward = jax.jit(lambda p, x, t, c: dit.apply({"params": p}, x, t, c))
    doubled = jnp.zeros((2 * batch, *latent)), jnp.zeros((2 * batch,), jnp.int32)
    step_flops = benchmarking.flops_of(
        forward.lower(dit_params, doubled[0], doubled[1], doubled[1]).compile()
    )
    results["dit_step_s"] = step_s
    results["dit_step_flops"] = step_flops
    results["dit_flops_over_peak"] = step_flops / step_s / peak
    del dit_params

    # SD-VAE decoder, fp32.
    channels = tuple(int(c) for c in args.vae_channels.split(","))
    vae = AutoencoderKL(block_out_channels=channels)
    vae_params = jax.jit(vae.init)(rng, jnp.zeros((1, args.image_size, args.image_size, 3)))

    def decode(params, z):
        images = decode_in_chunks(vae, params, z / SD_VAE_SCALE, args.decode_batch)
        return jnp.clip(127.5 * images + 128.0, 0, 255).astype(jnp.uint8)

    z = jax.random.normal(rng, (batch, *latent))
    print("SD-VAE decoder:")
    vae_timing = _timed("decode", jax.jit(decode), (vae_params, z), args.repeats)
    results["vae_decode_s"] = vae_timing["seconds"]
    del vae_params

    # Inception on uint8 images (ADM convention).
    inception_variables = jax.jit(inception.InceptionV3().init)(
        rng, jnp.zeros((1, inception.INCEPTION_SIZE, inception.INCEPTION_SIZE, 3))
    )
    images = jax.random.randint(rng, (batch, args.image_size, args.image_size, 3), 0, 256)
    images = images.astype(jnp.uint8)

    def features(variables, images):
        inputs = inception.preprocess(images, "uint8", "adm")  # [B, 299, 299, 3]
        return inception.InceptionV3().apply(variables, inputs)

    features = jax.jit(features)
    print("InceptionV3:")
    inc = _timed("features", features, (inception_variables, images), args.repeats)
    results["inception_s"] = inc["seconds"]

    per_batch = step_s * args.steps + results["vae_decode_s"] + results["inception_s"]
    batches = -(-args.num_samples // batch)
    results.update(
        seconds_per_batch=per_batch,
        images_per_second=batch / per_batch,
        inception_images_per_second=batch / results["inception_s"],
        estimated_hours=batches * per_batch / 3600,
        steps=args.steps,
        num_samples=args.num_samples,
    )
    print(
        f"\nper batch of {batch}: {args.steps} steps x {step_s * 1e3:.1f} ms + decode "
        f"{results['vae_decode_s'] * 1e3:.0f} ms + Inception {results['inception_s'] * 1e3:.0f} ms"
        f" = {per_batch:.1f} s ({batch / per_batch:.2f} images/s)\n"
        f"DiT step: {step_flops / step_s / 1e12:.1f} TFLOP/s = "
        f"{results['dit_flops_over_peak']:.1%} of the measured {args.dtype} matmul peak\n"
        f"Inception: {results['inception_images_per_second']:.0f} images/s\n"
        f"{args.num_samples} samples on {jax.device_count()} device(s) of this kind: "
        f"{results['estimated_hours']:.2f} h (one device; divide by the devices of a slice)"
    )
    with open(args.json, "w") as file:
        json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    _start = time.time()
    main()
    print(f"wall {time.time() - _start:.0f} s")
