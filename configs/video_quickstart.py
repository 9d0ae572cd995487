"""The video quickstart: class-conditional moving digits with a 3-D tokenizer and a latent DiT.

  python -m mmgen_jax.main --config=configs/video_quickstart.py --workdir=runs/video_quickstart

Stages, each a full experiment in `<workdir>/<stage>` (resumable like any run):
  tokenizer   the N-d conv VQ-VAE on the 8x32x32 moving_digits clips, per frame
              (configs/video_vqvae.py): an 8x8x8 grid of codes per clip
  classifier  the 8x8 digits classifier (configs/classifier.py) that judges each frame's sprite
  generator   class-conditional latent DiT over the tokenizer's code vectors, 2x2x2 patches of
              the code grid (64 tokens per clip) (configs/dit.py), trained on the training
              clips' latents encoded once (`generator.cache_latents`)
Then `final.per_class` clips per digit are sampled with classifier-free guidance, decoded,
scored by the `moving_digits` scorer (per-frame digit accuracy of the located sprite, motion
consistency; the same on real test clips as `real_*`) and written to
`<workdir>/samples.{npz,json,gif}` (the GIF shows `grid_per_class` clips of every digit, one
row per digit) and the generator's metrics.jsonl (`split: "sample"`).

Arguments: `runlocal=True` shrinks every stage for a smoke run.
"""

import ml_collections

from mmgen_jax import config_lib


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(arg, runlocal=False)
    local = ",runlocal=True" if args.runlocal else ""
    config = ml_collections.ConfigDict()
    config.trainer = "stages"
    config.stage_order = ("tokenizer", "classifier", "generator")
    config.stages = ml_collections.ConfigDict()
    config.stages.tokenizer = config_lib.load_sibling(
        __file__, "video_vqvae", "dataset=moving_digits" + local
    )
    config.stages.classifier = config_lib.load_sibling(
        __file__, "classifier", "dataset=digits" + local
    )
    # The generator's tokenizer_workdir is filled in with <workdir>/tokenizer at run time; its
    # data (moving_digits, all 8 frames) needs no video fields beyond the defaults.
    generator = config_lib.load_sibling(
        __file__, "dit", "space=latent,dataset=moving_digits" + local
    )
    generator.generator.stats_examples = 512 if not args.runlocal else 64
    generator.generator.cache_latents = True  # 1.6x the steps/s: no encoder pass per step
    if not args.runlocal:
        # The sprite's place and motion come first (2,000 steps), its digit later; guidance 6
        # makes the digit follow the label (6,000 steps: 15.6 % / 22.3 % / 32.1 % of frames
        # right at guidance 1.5 / 3 / 6). min-SNR-5 and 2e-3 as for the audio generator.
        generator.diffusion.min_snr_gamma = 5.0
        generator.optimizer.learning_rate = 2e-3
        generator.training.global_batch_size = 64
        generator.training.total_steps = 9000
        generator.training.eval_every = 3000
        generator.training.checkpoint_every = 1000
        generator.training.num_visualize = 8
        generator.sampling.grid_per_class = 2
        generator.sampling.cfg_scale = 6.0
    config.stages.generator = generator
    for name in config.stage_order:
        config.stages[name].name = name
    config.final = dict(
        tokenizer_stage="tokenizer",
        classifier_stage="classifier",
        generator_stage="generator",
        scorer="moving_digits",
        per_class=20 if not args.runlocal else 1,  # clips per digit that are scored
        grid_per_class=4 if not args.runlocal else 1,  # of which shown in samples.gif
        seed=0,
    )
    return config.lock()
