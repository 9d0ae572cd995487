#!/usr/bin/env bash
# Train the digits tokenizer with both quantizers, compress the test split, print the figures.
#
#   bash experiments/vqvae_digits.sh [OUT_DIR]
#
# Writes OUT_DIR/{vq,fsq}/ workdirs (metrics.jsonl, TensorBoard, image grids, checkpoints) and
# OUT_DIR/vq_test_codes.npz, and prints wall time, test PSNR/SSIM, codebook usage and bits per
# image for each quantizer.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/vqvae_digits_recipe}"
mkdir -p "$out"

for quantizer in vq fsq; do
  start=$(date +%s)
  python -m mmgen_jax.main --config="configs/vqvae.py:quantizer=${quantizer}" \
      --workdir="$out/$quantizer"
  echo "$quantizer wall time: $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
done

python -m mmgen_jax.compress encode --workdir "$out/vq" --input split:test \
    --output "$out/vq_test_codes.npz" | tee -a "$out/summary.txt"

python - "$out" <<'PY' | tee -a "$out/summary.txt"
import sys
from mmgen_jax.metrics import read_metrics
for quantizer in ("vq", "fsq"):
    test = read_metrics(f"{sys.argv[1]}/{quantizer}", split="test")[-1]
    print(f"{quantizer}: step {test['step']} test PSNR {test['psnr']:.2f} dB, "
          f"SSIM {test['ssim']:.4f}, codebook usage {test['codebook_usage']:.1%}, "
          f"perplexity {test['perplexity']:.1f}, {test['bits_per_example']:g} bits/image")
PY
