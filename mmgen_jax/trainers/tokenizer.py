"""VQ-VAE tokenizer objective: reconstruction + quantizer losses, and reconstruction metrics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmgen_jax.augment import augment
from mmgen_jax.metrics import audio as audio_metrics
from mmgen_jax.metrics import code_histogram, codebook_metrics, present, psnr, ssim
from mmgen_jax.models import quantizers
from mmgen_jax.models.vqvae import VQVAE, Decoder, Encoder, total_downsampling
from mmgen_jax.sharding import host_array
from mmgen_jax.trainers.objective import Batch
from mmgen_jax.trainers.state import compute_dtype


def build_quantizer(config: ml_collections.ConfigDict, input_dim: int):
    """The quantizer named by `config.type` ('vq' or 'fsq') with explicit arguments."""
    if config.type == "vq":
        return quantizers.VectorQuantizer(
            num_codes=config.num_codes,
            code_dim=config.code_dim,
            beta=config.beta,
            use_ema=config.use_ema,
            ema_decay=config.ema_decay,
            ema_epsilon=config.ema_epsilon,
            cosine=config.cosine,
            restart_after_steps=config.restart_after_steps,
            input_dim=input_dim,
        )
    if config.type == "fsq":
        return quantizers.FSQ(levels=tuple(config.levels), input_dim=input_dim)
    if config.type == "rvq":
        return quantizers.ResidualVQ(
            num_stages=config.num_stages,
            num_codes=config.num_codes,
            code_dim=config.code_dim,
            beta=config.beta,
            use_ema=config.use_ema,
            ema_decay=config.ema_decay,
            ema_epsilon=config.ema_epsilon,
            restart_after_steps=config.restart_after_steps,
            quantizer_dropout=config.get("quantizer_dropout", True),
            eval_stages=config.get("eval_stages", None),
            input_dim=input_dim,
        )
    raise ValueError(f"quantizer.type={config.type!r} is not one of 'vq', 'fsq', 'rvq'")


def build_vqvae(config: ml_collections.ConfigDict, out_channels: int) -> VQVAE:
    """A VQVAE from the `model` and `quantizer` sections of a config."""
    model = config.model
    channels, strides = tuple(model.channels), tuple(model.strides)
    if len(strides) != len(channels) - 1:
        raise ValueError(
            f"model.strides={strides} needs len(model.channels) - 1 = {len(channels) - 1} entries"
        )
    dtype = compute_dtype(config)
    remat = bool(model.get("remat", False))
    patch = model.get("patch_size", 1)  # space-to-depth before the stem (e.g. audio samples)
    patch = patch if isinstance(patch, int) else tuple(patch)
    kernel = model.get("kernel_size", 3)  # an int or per axis, e.g. (1, 3, 3): per-frame video
    kernel = kernel if isinstance(kernel, int) else tuple(kernel)
    encoder = Encoder(
        channels,
        strides,
        model.num_res_blocks,
        model.latent_dim,
        model.num_groups,
        dtype,
        remat,
        patch,
        kernel,
    )
    decoder = Decoder(
        channels,
        strides,
        model.num_res_blocks,
        out_channels,
        model.num_groups,
        dtype,
        remat,
        patch,
        kernel,
    )
    quantizer = build_quantizer(config.quantizer, model.latent_dim).clone(dtype=dtype)
    return VQVAE(encoder, decoder, quantizer)


def num_codes(config: ml_collections.ConfigDict) -> int:
    if config.quantizer.type == "fsq":
        return int(np.prod(config.quantizer.levels))
    return int(config.quantizer.num_codes)


class TokenizerObjective:
    """Trains a VQVAE on `batch['image']` (any rank, channels-last, values in [-1, 1])."""

    def __init__(self, config: ml_collections.ConfigDict, info: dict[str, Any]):
        self.info = info
        self.shape = tuple(info["shape"])
        self.model = build_vqvae(config, out_channels=self.shape[-1])
        self.num_codes = num_codes(config)
        self.num_visualize = config.training.num_visualize
        self.augmentations = tuple(config.training.get("augment", ()))
        patch = config.model.get("patch_size", 1)
        factors = total_downsampling((patch, *config.model.strides), len(self.shape) - 1)
        self.latent_shape = tuple(s // f for s, f in zip(self.shape[:-1], factors, strict=True))
        # Audio [T, C]: waveform L1 + MSE + this weight x multi-resolution STFT loss.
        self.stft_loss_weight = float(config.training.get("stft_loss_weight", 0.0))
        self.num_stages = int(config.quantizer.get("num_stages", 1))
        if config.quantizer.type != "rvq":
            self.num_stages = 1

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        return self.model.init({"params": rng}, batch["image"])

    def _apply(self, params, model_state, x, *, train: bool, rng: jax.Array | None = None):
        variables = {"params": params, **model_state}
        if not train:
            return self.model.apply(variables, x), model_state
        rngs = {quantizers.RNG_STREAM: rng}
        (recon, quantized), new_state = self.model.apply(
            variables, x, train=True, rngs=rngs, mutable=list(model_state)
        )
        return (recon, quantized), dict(new_state)

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        augment_rng, quantizer_rng = jax.random.split(rng)
        x = augment(batch["image"], augment_rng, self.augmentations)
        (recon, quantized), new_state = self._apply(
            params, model_state, x, train=True, rng=quantizer_rng
        )
        reconstruction = jnp.mean((recon - x) ** 2)
        loss = reconstruction + quantized.loss
        metrics = {"reconstruction_mse": reconstruction, "quantizer_loss": quantized.loss}
        if x.ndim == 3:  # audio [B, T, C]
            audio_loss, audio_metrics = _audio_loss(recon, x, self.stft_loss_weight)
            loss = loss + audio_loss
            metrics.update(audio_metrics)
        metrics.update(quantized.stats)
        return loss, (new_state, metrics)

    def post_update(self, params, model_state):
        return quantizers.apply_codebook_restarts(params, model_state)

    def eval_step(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        x, mask = batch["image"], batch["mask"]
        (recon, quantized), _ = self._apply(params, model_state, x, train=False)
        # Metrics on [0, 1] images, clipped as a viewer would show them.
        x01 = (x + 1.0) / 2.0
        recon01 = jnp.clip((recon + 1.0) / 2.0, 0.0, 1.0)
        per_example_mse = jnp.mean((recon01 - x01) ** 2, axis=tuple(range(1, x.ndim)))
        sums = {
            "count": jnp.sum(mask),
            "mse": jnp.sum(per_example_mse * mask),
            "psnr": jnp.sum(psnr(recon01, x01) * mask),
            "code_counts": code_histogram(quantized.indices, self.num_codes, mask),
        }
        if x.ndim == 4:  # SSIM is defined for images
            sums["ssim"] = jnp.sum(ssim(recon01, x01) * mask)
        if x.ndim == 5:  # video [B, T, H, W, C]: per-frame PSNR / SSIM, mean over each clip
            frames, recon_frames = (a.reshape(-1, *a.shape[2:]) for a in (x01, recon01))
            for name, metric in (("frame_psnr", psnr), ("frame_ssim", ssim)):
                per_clip = metric(recon_frames, frames).reshape(x.shape[:2]).mean(axis=1)  # [B]
                sums[name] = jnp.sum(per_clip * mask)
        if x.ndim == 3:  # audio [B, T, C]
            sums.update(self._audio_eval_sums(params, model_state, x, recon, quantized, mask))
        return sums

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        count = float(sums["count"])
        metrics = {
            name: float(sums[name]) / count
            for name in ("mse", "psnr", "ssim", "frame_psnr", "frame_ssim")
            if name in sums
        }
        metrics.update(codebook_metrics(sums["code_counts"]))
        latent_positions = int(np.prod(self.latent_shape))
        metrics["bits_per_example"] = latent_positions * float(np.log2(self.num_codes))
        if len(self.shape) == 2:  # audio
            metrics["bits_per_example"] *= self.num_stages
            metrics.update(self._audio_finalize(sums, count))
        return metrics

    def visualize(self, params, model_state, batch: Batch) -> dict[str, Any]:
        x = batch["image"][: self.num_visualize]
        recon, _ = self.model.apply({"params": params, **model_state}, x)
        originals, reconstructions = host_array(x), np.clip(host_array(recon), -1, 1)
        return {"reconstructions": present.present_pairs(originals, reconstructions, self.info)}

    # -- audio [B, T, C] ---------------------------------------------------------------------

    def _audio_eval_sums(self, params, model_state, x, recon, quantized, mask):
        """Masked sums of SI-SNR and spectral distance (at every stage count for residual VQ)
        and per-stage code histograms."""
        sums = {
            "si_snr": jnp.sum(audio_metrics.si_snr(recon, x) * mask),
            "spectral_distance": jnp.sum(
                audio_metrics.multiscale_spectral_distance(recon, x) * mask
            ),
        }
        if self.num_stages == 1:
            return sums
        variables = {"params": params, **model_state}
        for stage in range(self.num_stages):
            counts = code_histogram(quantized.indices[..., stage], self.num_codes, mask)
            sums[f"code_counts_stage{stage}"] = counts
            used = stage + 1
            partial = self.model.apply(
                variables,
                quantized.indices,
                method=lambda model, indices, k=used: model.decode(
                    model.quantizer.indices_to_codes(indices, num_stages=k)
                ),
            )
            sums[f"si_snr_{used}stages"] = jnp.sum(audio_metrics.si_snr(partial, x) * mask)
        return sums

    def _audio_finalize(self, sums, count: float) -> dict[str, float]:
        """SI-SNR (dB), spectral distance, kbps, and per-stage usage / SI-SNR for residual VQ."""
        metrics = {name: float(sums[name]) / count for name in ("si_snr", "spectral_distance")}
        sample_rate = float(self.info.get("sample_rate") or 0)
        frames_per_second = sample_rate * self.latent_shape[0] / self.shape[0]
        metrics["kbps"] = audio_metrics.bitrate_kbps(
            frames_per_second, [self.num_codes] * self.num_stages
        )
        for stage in range(self.num_stages if self.num_stages > 1 else 0):
            used = stage + 1
            usage = codebook_metrics(sums[f"code_counts_stage{stage}"])
            metrics[f"codebook_usage_stage{stage}"] = usage["codebook_usage"]
            metrics[f"perplexity_stage{stage}"] = usage["perplexity"]
            metrics[f"si_snr_{used}stages"] = float(sums[f"si_snr_{used}stages"]) / count
            metrics[f"kbps_{used}stages"] = audio_metrics.bitrate_kbps(
                frames_per_second, [self.num_codes] * used
            )
        return metrics


def _audio_loss(recon, x, stft_loss_weight: float):
    """Waveform L1 + `stft_loss_weight` x multi-resolution STFT loss, and their values."""
    wave_l1 = jnp.mean(jnp.abs(recon - x))
    metrics = {"waveform_l1": wave_l1}
    loss = wave_l1
    if stft_loss_weight:
        stft = audio_metrics.multi_resolution_stft_loss(recon, x)
        metrics["stft_loss"] = stft
        loss = loss + stft_loss_weight * stft
    return loss, metrics
