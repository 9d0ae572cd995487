"""Compress images to VQ-VAE codes and back with a trained tokenizer.

  python -m mmgen_jax.compress encode --workdir DIR --input IMAGES --output codes.npz
  python -m mmgen_jax.compress decode --workdir DIR --input codes.npz --output OUT_DIR

IMAGES is a PNG/JPEG file, a folder of them, or `split:<name>` for a split of the dataset the
tokenizer was trained on (e.g. `split:test`). Images of another size are centre-cropped and
resized to the tokenizer's input size. `encode` prints the bits per image (latent positions x
log2 K, a fixed-length code) and the compression ratio against the raw 8-bit pixels.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
from PIL import Image

from mmgen_jax import inference, xla_flags
from mmgen_jax.data import pipeline
from mmgen_jax.metrics import save_png, to_uint8
from mmgen_jax.models.vqvae import VQVAE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _load_image(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """One image file -> float32 [H, W, C] in [-1, 1] at the model's input size."""
    height, width, channels = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((width, height), Image.Resampling.LANCZOS)
            array = np.asarray(img, np.float32).reshape(height, width, channels)
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return array / 127.5 - 1.0


def load_inputs(spec: str, config, shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """Images [N, H, W, C] in [-1, 1] and their names from a file, folder or `split:NAME`."""
    if spec.startswith("split:"):
        split = spec.split(":", 1)[1]
        images = pipeline.load_split_numpy(config.data, split)["image"]
        return images, [f"{split}_{i:05d}" for i in range(len(images))]
    if os.path.isdir(spec):
        files = sorted(
            os.path.join(spec, f) for f in os.listdir(spec) if f.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            raise ValueError(f"no PNG/JPEG files in {spec}")
    elif os.path.isfile(spec):
        files = [spec]
    else:
        raise FileNotFoundError(f"--input {spec} is neither a file, a folder nor split:<name>")
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return np.stack([_load_image(f, shape) for f in files]), names


def _index_dtype(num_codes: int):
    return np.uint8 if num_codes <= 256 else np.uint16 if num_codes <= 65536 else np.int32


def encode(args) -> None:
    run = inference.load_trained(args.workdir)
    config, objective, variables, info = run.config, run.objective, run.variables, run.info
    images, names = load_inputs(args.input, config, tuple(info["shape"]))
    encode_fn = jax.jit(
        lambda x: objective.model.apply(variables, x, method=VQVAE.encode_to_indices)
    )
    indices = np.concatenate(
        [
            np.asarray(encode_fn(images[i : i + args.batch_size]))
            for i in range(0, len(images), args.batch_size)
        ]
    )
    num_codes = objective.num_codes
    np.savez_compressed(
        args.output,
        indices=indices.astype(_index_dtype(num_codes)),
        num_codes=num_codes,
        image_shape=np.asarray(info["shape"]),
        names=np.asarray(names),
    )
    bits = int(np.prod(indices.shape[1:])) * float(np.log2(num_codes))
    raw_bits = int(np.prod(info["shape"])) * 8
    print(
        f"encoded {len(images)} images to {args.output}: latent grid {indices.shape[1:]}, "
        f"K={num_codes}, {bits:g} bits per image (raw 8-bit: {raw_bits} bits), "
        f"compression ratio {raw_bits / bits:.2f}x"
    )


def decode(args) -> None:
    run = inference.load_trained(args.workdir)
    objective, variables = run.objective, run.variables
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    codes = np.load(args.input)
    if int(codes["num_codes"]) != objective.num_codes:
        raise ValueError(
            f"{args.input} holds codes of a K={int(codes['num_codes'])} codebook, but the "
            f"tokenizer in {args.workdir} has K={objective.num_codes}"
        )
    decode_fn = jax.jit(lambda i: objective.model.apply(variables, i, method=VQVAE.decode_indices))
    indices = codes["indices"].astype(np.int32)
    os.makedirs(args.output, exist_ok=True)
    for start in range(0, len(indices), args.batch_size):
        batch = np.asarray(decode_fn(indices[start : start + args.batch_size]))
        for name, image in zip(codes["names"][start:], batch, strict=False):
            save_png(os.path.join(args.output, f"{name}.png"), to_uint8(np.clip(image, -1, 1)))
    print(f"decoded {len(indices)} images to {args.output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mmgen_jax.compress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("encode", "images -> codes.npz"), ("decode", "codes.npz -> PNGs")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--workdir", required=True, help="workdir of a trained tokenizer")
        p.add_argument("--input", required=True)
        p.add_argument("--output", required=True)
        p.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    xla_flags.configure_for_cpu()
    try:
        (encode if args.command == "encode" else decode)(args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
