"""Masked discrete diffusion over the code-index grid of a trained VQ-VAE (two-stage images).

Usage (the tokenizer first, e.g. `configs/vqvae.py` on the digits: a 4x4 grid of 256 codes):
  python -m mmgen_jax.main --config=configs/vqvae.py --workdir=/tmp/vqvae
  python -m mmgen_jax.main --config=configs/masked_vq.py:tokenizer=/tmp/vqvae \
      --workdir=/tmp/masked_vq

Each training image is encoded to its code indices by the frozen tokenizer; a class-conditional
token DiT (one transformer token per code, 2-D sin-cos positions) is trained with the MDLM
NELBO; samples are drawn with cached ancestral sampling and classifier-free guidance and decoded
by the tokenizer.

Arguments (after the colon, comma separated):
  tokenizer  workdir of a trained VQ-VAE (required to train).
  dataset    'digits' (default) or the image dataset the tokenizer was trained on.
  runlocal   tiny model and few steps, for smoke runs and tests.
"""

from mmgen_jax import config_lib


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(arg, tokenizer="", dataset="digits", runlocal=False)
    config = config_lib.base_config()
    config.trainer = "masked"
    config.data.name = args.dataset
    config.generator = dict(
        space="latent", tokenizer_workdir=args.tokenizer, class_conditional=True
    )
    config.model = dict(
        hidden_size=128,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        time_conditioned=False,  # makes cached sampling exact
    )
    config.diffusion = dict(
        schedule="loglinear",
        eps=1e-3,
        position_shift=0.0,  # > 0: raster-later codes masked first (diffusion/masked.py)
        t_min=1e-3,
        antithetic=True,
        eval_draws=4,
    )
    config.sampling = dict(
        sampler="ancestral", steps=32, cache=True, cfg_scale=1.5, temperature=1.0, grid_per_class=10
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
        config.sampling.steps = 4
        config.sampling.grid_per_class = 2
        config.training.global_batch_size = 16
        config.training.total_steps = 4
        config.training.log_every = 2
        config.training.eval_every = 100
        config.training.checkpoint_every = 2
        config.optimizer.warmup_steps = 1
    return config.lock()
