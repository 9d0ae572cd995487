#!/usr/bin/env bash
# The video recipe on the offline moving digits: 3-D VQ-VAE tokenizer -> digits classifier ->
# class-conditional latent DiT -> 20 clips per digit -> moving_digits score, then the figures.
#
#   bash experiments/video_moving_digits.sh [OUT_DIR] [extra --config.* overrides...]
#
# Writes OUT_DIR/run/ (the staged run: tokenizer/, classifier/ and generator/ workdirs with
# metrics.jsonl, TensorBoard, reconstruction and sample GIFs, checkpoints; samples.gif,
# samples.npz, samples.json) and OUT_DIR/summary.txt with: wall time; the tokenizer's test frame
# PSNR / SSIM and bits per clip; the per-frame digit accuracy and motion consistency of the test
# clips decoded by the tokenizer, of generated clips and of real test clips (calibration).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/video_moving_digits}"
shift || true
mkdir -p "$out"

start=$(date +%s)
python -m mmgen_jax.main --config=configs/video_quickstart.py --workdir="$out/run" "$@"
echo "recipe wall time: $(( $(date +%s) - start )) s" | tee "$out/summary.txt"

python - "$out/run" <<'PY' | tee -a "$out/summary.txt"
import json
import sys

import jax
import numpy as np

from mmgen_jax import evaluation, evaluation_video, inference
from mmgen_jax.data import pipeline
from mmgen_jax.metrics import read_metrics
from mmgen_jax.models.vqvae import VQVAE

run = sys.argv[1]
test = read_metrics(f"{run}/tokenizer", split="test")[-1]
print(f"tokenizer step {test['step']}: test frame PSNR {test['frame_psnr']:.2f} dB, frame SSIM "
      f"{test['frame_ssim']:.3f}, clip PSNR {test['psnr']:.2f} dB, "
      f"{test['bits_per_example']:g} bits per clip, codebook usage {test['codebook_usage']:.2f}")

# The same scorer on test clips passed through the tokenizer: the ceiling for generated clips.
tokenizer = inference.load_trained(f"{run}/tokenizer")
clips = pipeline.load_split_numpy(tokenizer.config.data, tokenizer.config.data.test_split)
reconstruct = jax.jit(lambda x: tokenizer.objective.model.apply(tokenizer.variables, x)[0])
decoded = np.concatenate(
    [np.clip(np.asarray(reconstruct(clips["image"][i : i + 64])), -1, 1)
     for i in range(0, len(clips["image"]), 64)]
)
scorer = evaluation.SampleScorer(f"{run}/classifier")
through = evaluation_video.clip_scores(scorer, decoded, clips["label"])

scores = json.load(open(f"{run}/samples.json"))
rows = [("generated", scores, ""), ("tokenized test", through, ""), ("real test", scores, "real_")]
print(f"{'clips':<16} {'frame acc':>9} {'clip acc':>8} {'motion cons':>11} {'speed chg':>9} "
      f"{'speed':>6} {'static':>6}")
for name, values, prefix in rows:
    get = lambda key: values[prefix + key]  # noqa: E731
    print(f"{name:<16} {get('frame_accuracy'):9.3f} {get('clip_accuracy'):8.3f} "
          f"{get('motion_consistency'):11.3f} {get('speed_change'):9.3f} "
          f"{get('mean_speed'):6.2f} {get('static_fraction'):6.2f}")
print(f"sampler {scores['sampler']} {scores['steps']} steps, cfg {scores['cfg_scale']}, "
      f"{scores['num_samples']} clips, seed {scores['seed']}")
PY
