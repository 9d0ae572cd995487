"""The quickstart: the whole two-stage system on the embedded digits, in minutes on a CPU.

  python -m mmgen_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Stages, each a full experiment in `<workdir>/<stage>` (resumable like any run):
  tokenizer   VQ-VAE on the 8x8 digits (configs/vqvae.py), 4x4 grid of codes
  classifier  the digits classifier used to score samples (configs/classifier.py)
  generator   class-conditional latent DiT over the tokenizer's code vectors (configs/dit.py)
Then 50 samples per class are drawn with classifier-free guidance, decoded, scored (class
accuracy, digits-FD against the test split beside the train-vs-test baseline at the same sample
count) and written to `<workdir>/samples.{npz,json}` and the generator's metrics.jsonl
(`split: "sample"`); `<workdir>/samples.png` shows 10 per class (a 10 x 10 grid).

Override a stage with e.g. `--config.stages.generator.training.total_steps=2000`.
Arguments: `space=pixel` trains the DiT on pixels instead of latents; `runlocal=True` shrinks
every stage for a smoke run.
"""

import ml_collections

from mmgen_jax import config_lib


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(arg, space="latent", runlocal=False)
    local = ",runlocal=True" if args.runlocal else ""
    config = ml_collections.ConfigDict()
    config.trainer = "stages"
    config.stages = ml_collections.ConfigDict()
    config.stage_order = ("classifier", "generator")
    if args.space == "latent":
        config.stage_order = ("tokenizer", "classifier", "generator")
        config.stages.tokenizer = config_lib.load_sibling(
            __file__, "vqvae", "dataset=digits" + local
        )
        if not args.runlocal:
            # 2000 of the tokenizer config's 3000 steps: the samples are as good and the whole
            # quickstart stays well inside 10 minutes on 2 CPU cores.
            config.stages.tokenizer.training.total_steps = 2000
    config.stages.classifier = config_lib.load_sibling(
        __file__, "classifier", "dataset=digits" + local
    )
    # The generator's tokenizer_workdir is filled in with <workdir>/tokenizer at run time.
    config.stages.generator = config_lib.load_sibling(
        __file__, "dit", f"space={args.space}" + local
    )
    for name in config.stage_order:
        config.stages[name].name = name
    config.final = dict(
        tokenizer_stage="tokenizer",
        classifier_stage="classifier",
        generator_stage="generator",
        per_class=50 if not args.runlocal else 2,  # samples per class that are scored
        grid_per_class=10 if not args.runlocal else 2,  # of which shown in samples.png
        seed=0,
    )
    return config.lock()
