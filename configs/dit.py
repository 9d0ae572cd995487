"""Class-conditional Diffusion Transformer, in pixel space or a trained tokenizer's latent space.

Usage:
  python -m mmgen_jax.main --config=configs/dit.py --workdir=/tmp/dit_pixels
  python -m mmgen_jax.main --config=configs/dit.py:space=latent,tokenizer=/tmp/vqvae \
      --workdir=/tmp/dit_latent

Arguments (after the colon, comma separated):
  space      'pixel' (default) or 'latent' (two-stage: needs `tokenizer`). ('raw', the model's
             own space with no decoding, is what `mmgen_jax.tools.import_dit` writes.)
  tokenizer  workdir of a trained VQ-VAE (configs/vqvae.py) whose latents the DiT models.
  dataset    'digits' (default) or any TFDS image dataset / 'image_folder:<path>'.
  model      'tiny' (the digits model) or a paper model: 'DiT-S/2', 'DiT-B/4', 'DiT-XL/2', ...
  runlocal   tiny model and few steps, for smoke runs and tests.
"""

from mmgen_jax import config_lib
from mmgen_jax.models.dit import dit_config


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(
        arg, space="pixel", tokenizer="", dataset="digits", model="tiny", runlocal=False
    )
    config_lib.require_choice("space", args.space, ("pixel", "latent"))
    config = config_lib.base_config()
    config.trainer = "generator"
    config.data.name = args.dataset

    config.generator = dict(
        space=args.space,
        tokenizer_workdir=args.tokenizer,
        class_conditional=True,
        stats_examples=10_000,  # training examples used to estimate the latent mean / std
        # Latent space: encode the training split once and train on those latents (saves the
        # encoder pass of every step; for datasets whose latents fit in memory).
        cache_latents=False,
        # A VQ-VAE tokenizer decodes samples after snapping them to the nearest code (True) or
        # feeds them to its decoder as they are (False).
        snap_to_codes=True,
    )
    # 8x8 digits: patch 2 on pixels -> 16 tokens; patch 2 on the 4x4 latent grid -> 4 tokens of
    # 2x2x8 code-vector values (3x faster than patch 1 and better samples after 3000 steps).
    config.model = dict(
        patch_size=2,
        hidden_size=128,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        learn_sigma=True,
        remat=False,  # recompute each block in the backward pass (less memory)
    )
    if args.model != "tiny":
        config.model.update(dit_config(args.model))
    # min_snr_gamma > 0 weights the MSE by min(SNR, gamma) (Hang et al. 2023); 0 = the paper's
    # uniform weighting.
    config.diffusion = dict(
        num_timesteps=1000, schedule="linear", mean_type="epsilon", min_snr_gamma=0.0
    )
    # cfg_channels: guide only the first N channels (the paper's sample.py uses 3); 0 = all.
    config.sampling = dict(
        sampler="ddim", steps=50, eta=0.0, cfg_scale=1.5, cfg_channels=0, grid_per_class=10
    )

    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.0
    config.training.global_batch_size = 128
    config.training.total_steps = 3000
    config.training.log_every = 100
    config.training.eval_every = 1000
    config.training.checkpoint_every = 1000
    config.training.ema_decay = 0.999

    if args.runlocal:
        config.model.hidden_size = 32
        config.model.depth = 1
        config.model.num_heads = 2
        config.generator.stats_examples = 256
        config.sampling.steps = 4
        config.sampling.grid_per_class = 2
        config.training.global_batch_size = 16
        config.training.total_steps = 4
        config.training.log_every = 2
        config.training.eval_every = 100
        config.training.checkpoint_every = 2
        config.optimizer.warmup_steps = 1
    return config.lock()
