#!/usr/bin/env bash
# The audio recipe on the offline synthetic notes: RVQ tokenizer -> latent DiT -> 20 notes per
# pitch class -> pitch score, then the figures.
#
#   bash experiments/audio_notes.sh [OUT_DIR]
#
# Writes OUT_DIR/run/ (the staged run: tokenizer/ and generator/ workdirs with metrics.jsonl,
# TensorBoard, WAV reconstructions and samples, checkpoints; samples_<i>.wav, samples.npz,
# samples.json) and OUT_DIR/summary.txt with: wall time; tokenizer test SI-SNR, spectral
# distance and kbps for 1..4 residual stages; the pitch accuracy of the test split decoded by
# the tokenizer; the pitch accuracy of generated notes and of real test notes (calibration).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/audio_notes}"
mkdir -p "$out"

start=$(date +%s)
python -m mmgen_jax.main --config=configs/audio_quickstart.py --workdir="$out/run"
echo "recipe wall time: $(( $(date +%s) - start )) s" | tee "$out/summary.txt"

python - "$out/run" <<'PY' | tee -a "$out/summary.txt"
import json
import sys

import jax
import numpy as np

from mmgen_jax import inference
from mmgen_jax.data import pipeline
from mmgen_jax.metrics import audio, read_metrics
from mmgen_jax.models.vqvae import VQVAE

run = sys.argv[1]
test = read_metrics(f"{run}/tokenizer", split="test")[-1]
stages = sorted(int(k.split("_")[2][0]) for k in test if k.startswith("si_snr_"))
print(f"tokenizer step {test['step']}: test SI-SNR {test['si_snr']:.2f} dB, spectral distance "
      f"{test['spectral_distance']:.3f}, {test['kbps']:g} kbps")
for k in stages:
    print(f"  {k} stage(s): SI-SNR {test[f'si_snr_{k}stages']:.2f} dB at "
          f"{test[f'kbps_{k}stages']:g} kbps, stage {k - 1} codebook usage "
          f"{test[f'codebook_usage_stage{k - 1}']:.0%}")
tokenizer = inference.load_trained(f"{run}/tokenizer")
notes = pipeline.load_split_numpy(tokenizer.config.data, "test")
reconstruct = jax.jit(lambda x: tokenizer.objective.model.apply(tokenizer.variables, x)[0])
decoded = np.concatenate(
    [np.clip(np.asarray(reconstruct(notes["image"][i : i + 60])), -1, 1) for i in range(0, 240, 60)]
)
rate = int(tokenizer.info["sample_rate"])
print(f"pitch accuracy of tokenizer reconstructions (test): "
      f"{audio.pitch_class_accuracy(decoded, notes['label'], rate):.1%}")
with open(f"{run}/samples.json") as f:
    samples = json.load(f)
print(f"generated notes: pitch accuracy {samples['pitch_accuracy']:.1%} over "
      f"{samples['num_samples']} samples ({samples['sampler']} {samples['steps']} steps, "
      f"guidance {samples['cfg_scale']}); real test notes (calibration) "
      f"{samples['real_test_pitch_accuracy']:.1%}")
PY
