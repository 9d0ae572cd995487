#!/usr/bin/env bash
# Reproduce the DiT paper's class-conditional ImageNet table from the official weights:
# DiT-XL/2 (Peebles & Xie 2023), 50K samples, classifier-free guidance 1.5 on the first three
# latent channels, 250 DDPM steps, SD-VAE decoder, scored with the ADM evaluator suite.
#
#   bash experiments/reproduce_dit_xl2.sh SIZE WEIGHTS_DIR [OUT_DIR]      # SIZE = 256 or 512
#
# WEIGHTS_DIR must hold (nothing is downloaded; fetch them on a machine with internet):
#   DiT-XL-2-${SIZE}x${SIZE}.pt            https://dl.fbaipublicfiles.com/DiT/models/
#   sd-vae-ft-${VAE:-ema}/                 diffusers folder (config.json and
#                                          diffusion_pytorch_model.safetensors) of
#                                          https://huggingface.co/stabilityai/sd-vae-ft-ema (or -mse)
#   pt_inception-2015-12-05-6726825d.pth   https://github.com/mseitzer/pytorch-fid/releases
#   VIRTUAL_imagenet${SIZE}_labeled.npz    https://openaipublic.blob.core.windows.net/diffusion/
#                                          jul-2021/ref_batches/imagenet/${SIZE}/
#
# Environment overrides: VAE (ema|mse), NUM_SAMPLES (50000), BATCH (global batch, 256),
# CFG_SCALE (1.5), STEPS (250), MODEL (DiT-XL/2), DISTRIBUTED=1 on multi-host slices (every
# host runs this script, e.g. through launch_tpu.sh).
# Writes OUT_DIR (default runs/dit_xl2_${SIZE}): sd_vae/ and dit/ (the imported workdirs),
# dit/evaluations/<tag>/ (results.json, samples.png, samples_stats.npz, resumable state) and
# summary.txt with the scores next to the paper's and the wall time. Rerunning the same command
# resumes an interrupted evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:?usage: reproduce_dit_xl2.sh SIZE WEIGHTS_DIR [OUT_DIR]}"
weights="${2:?usage: reproduce_dit_xl2.sh SIZE WEIGHTS_DIR [OUT_DIR]}"
out="${3:-runs/dit_xl2_${size}}"
case "$size" in
  256) paper="FID 2.27, sFID 4.60, IS 278.24, precision 0.83, recall 0.57" ;;
  512) paper="FID 3.04, sFID 5.02, IS 240.82, precision 0.84, recall 0.54" ;;
  *) echo "error: SIZE must be 256 or 512, got '$size'" >&2; exit 2 ;;
esac
model="${MODEL:-DiT-XL/2}"
dit_file="$weights/DiT-XL-2-${size}x${size}.pt"
vae_dir="$weights/sd-vae-ft-${VAE:-ema}"
inception_file="$weights/pt_inception-2015-12-05-6726825d.pth"
reference="$weights/VIRTUAL_imagenet${size}_labeled.npz"
for path in "$dit_file" "$vae_dir" "$inception_file" "$reference"; do
  if [ ! -e "$path" ]; then
    echo "error: $path is missing; see the header of $0 for where to get it" >&2
    exit 1
  fi
done
distributed=()
if [ "${DISTRIBUTED:-0}" = 1 ]; then distributed=(--distributed); fi

start=$(date +%s)
mkdir -p "$out"
if [ ! -e "$out/sd_vae/kl_autoencoder.json" ]; then
  python -m mmgen_jax.tools.import_sd_vae --weights "$vae_dir" --workdir "$out/sd_vae" \
      --image-size "$size"
fi
if [ ! -e "$out/dit/imported_dit.json" ]; then
  python -m mmgen_jax.tools.import_dit --checkpoint "$dit_file" --model "$model" \
      --image-size "$size" --workdir "$out/dit" --vae_workdir "$out/sd_vae"
fi
python -m mmgen_jax.evaluate --workdir "$out/dit" --num_samples "${NUM_SAMPLES:-50000}" \
    --batch_size "${BATCH:-256}" --sampler ddpm --steps "${STEPS:-250}" \
    --cfg_scale "${CFG_SCALE:-1.5}" --cfg_channels 3 --inception_weights "$inception_file" \
    --reference "$reference" "${distributed[@]}" | tee "$out/evaluate.log"
{
  echo "DiT-XL/2 ${size}x${size}, cfg ${CFG_SCALE:-1.5}, ${STEPS:-250} DDPM steps, ${NUM_SAMPLES:-50000} samples"
  echo "paper: $paper"
  tail -1 "$out/evaluate.log"
  echo "wall time: $(( $(date +%s) - start )) s"
} | tee "$out/summary.txt"
