"""Text generation by masked discrete diffusion (MDLM) with a token DiT, or by next-token
prediction with the same DiT made causal (the autoregressive baseline).

Usage:
  python -m mmgen_jax.main --config=configs/text.py --workdir=/tmp/text_arithmetic
  python -m mmgen_jax.main --config=configs/text.py:dataset=lm1b,tokenizer=sentencepiece \
      --workdir=/tmp/text_lm1b

Arguments (after the colon, comma separated):
  dataset    'arithmetic' (offline builder, default) or 'lm1b' (TFDS, must be prepared) or any
             TFDS dataset with a text feature 'text'.
  tokenizer  'chars' (default for arithmetic: its 14 characters), 'bytes' or 'sentencepiece'
             (default for lm1b: trained on the training split, 8000 pieces).
  objective  'masked' (default): masked diffusion (`trainers/masked.py`);
             'autoregressive': the same model size, data and schedule, trained left to right
             (`trainers/autoregressive.py`).
  time       'none' (default): the denoiser ignores t, which makes cached sampling exact;
             'adaln': t-embedding in the adaLN conditioning (sampling without caching).
             Masked diffusion only.
  runlocal   tiny model and few steps, for smoke runs and tests.
"""

from ml_collections import config_dict

from mmgen_jax import config_lib
from mmgen_jax.data.builders import arithmetic


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(
        arg, dataset="arithmetic", tokenizer="", objective="masked", time="none", runlocal=False
    )
    config_lib.require_choice("objective", args.objective, ("masked", "autoregressive"))
    config_lib.require_choice("time", args.time, ("none", "adaln"))
    autoregressive = args.objective == "autoregressive"
    if autoregressive and args.time != "none":
        raise ValueError(
            "time conditioning belongs to masked diffusion, not objective=autoregressive"
        )
    small = args.dataset == "arithmetic"
    tokenizer = args.tokenizer or ("chars" if small else "sentencepiece")
    config_lib.require_choice("tokenizer", tokenizer, ("bytes", "chars", "sentencepiece"))
    config = config_lib.base_config()
    config.trainer = args.objective
    config.data.name = args.dataset
    config.data.modality = "text"
    config.data.text_key = "text"
    config.data.tokenizer = tokenizer
    config.data.alphabet = arithmetic.ALPHABET if small else ""
    # Arithmetic statements have at most 12 characters; lm1b sentences are cut at 128 tokens.
    config.data.seq_len = 16 if small else 128
    config.data.on_overflow = "error" if small else "truncate"
    config.data.sentencepiece_vocab_size = 8000
    config.data.sentencepiece_max_sentences = 300_000
    if not small:
        config.data.train_split = "train"
        config.data.eval_split = "test[:50%]"  # lm1b has train and test only
        config.data.test_split = "test[50%:]"

    config.generator = dict(space="tokens", tokenizer_workdir="", class_conditional=False)
    config.model = dict(
        hidden_size=128 if small else 768,
        depth=4 if small else 12,
        num_heads=4 if small else 12,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
    )
    config.sampling = dict(
        # Masked: 'ancestral' (MDLM, positions revealed at random) or 'confidence' (the most
        # confident draws first). Autoregressive: 'ancestral', token by token.
        sampler="ancestral",
        cfg_scale=1.0,
        temperature=1.0,
        grid_per_class=32,  # samples written at each evaluation
    )
    if not autoregressive:
        config.model.time_conditioned = args.time == "adaln"
        # MDLM: log-linear alpha_t = 1 - (1 - eps) t; antithetic t; eval averages 4 draws.
        # position_shift w > 0: position l of L runs the schedule at its own time
        # clip((1 + w) t - w (1 - l / (L - 1)), 0, 1), later positions masked first (0: MDLM).
        # low_t_max / low_t_fraction (unset: uniform t): importance-sample training times,
        # that fraction of them below low_t_max, reweighted so the NELBO stays unbiased
        # (importance_weighted=False trains on the proposal's emphasis instead).
        config.diffusion = dict(
            schedule="loglinear",
            eps=1e-3,
            position_shift=0.0,
            t_min=1e-3,
            antithetic=True,
            eval_draws=4,
            low_t_max=config_dict.placeholder(float),
            low_t_fraction=config_dict.placeholder(float),
            importance_weighted=True,
        )
        config.sampling.steps = 64 if small else 1000
        config.sampling.cache = args.time == "none"

    config.optimizer.learning_rate = 1e-3 if small else 3e-4
    config.optimizer.warmup_steps = 200 if small else 2500
    config.optimizer.weight_decay = 0.0
    # Arithmetic: 3000 steps of 64 statements (about 6 epochs) fit in minutes on 2 CPU cores; a
    # short EMA (0.99) so the evaluated weights are not dominated by early steps.
    config.training.global_batch_size = 64 if small else 512
    config.training.total_steps = 3000 if small else 1_000_000
    config.training.log_every = 100
    config.training.eval_every = 1500 if small else 10_000
    config.training.checkpoint_every = 1500 if small else 10_000
    config.training.ema_decay = 0.99 if small else 0.9999

    if args.runlocal:
        config.model.hidden_size = 32
        config.model.depth = 1
        config.model.num_heads = 2
        config.data.sentencepiece_vocab_size = 64
        config.data.sentencepiece_max_sentences = 2000
        if not autoregressive:
            config.sampling.steps = 4
        config.sampling.grid_per_class = 4
        config.training.global_batch_size = 16
        config.training.total_steps = 4
        config.training.log_every = 2
        config.training.eval_every = 100
        config.training.checkpoint_every = 2
        config.optimizer.warmup_steps = 1
    return config.lock()
