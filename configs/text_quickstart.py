"""Text quickstart: masked discrete diffusion on generated arithmetic, in minutes on a CPU.

  python -m mmgen_jax.main --config=configs/text_quickstart.py --workdir=runs/text_quickstart
  python -m mmgen_jax.main --config=configs/text_quickstart.py:objective=autoregressive \
      --workdir=runs/text_quickstart_ar

One stage, `generator` (configs/text.py: a token DiT trained with the MDLM NELBO on the
`arithmetic` statements, characters as tokens, no time conditioning), then
`final.per_class` unconditional samples drawn with cached ancestral sampling and scored by the
`arithmetic` scorer (fractions that parse as `a op b=c`, that are correct, that are correct
copies of training statements, and the test NELBO in bits per token). Written:
`<workdir>/samples.txt` (one decoded statement per line), `samples.{npz,json}` (token ids;
settings, denoiser calls and scores), and the generator's metrics.jsonl (`split: "sample"`).

The default 3,000 steps take minutes and teach the format more than the arithmetic; 30,000
steps with the confidence sampler (`--config.stages.generator.training.total_steps=30000
--config.stages.generator.sampling.sampler=confidence`, about 35 min on 2 cores) give 72 %
correct statements (README, "Audio, video and text").

With `objective=autoregressive` the stage trains the equally sized causal baseline instead
(same data, model size, steps and batch; samples drawn token by token at temperature 1) and
the scores are the same, its test figure being the exact NLL in bits per token.

Arguments: `objective=masked|autoregressive`; `runlocal=True` shrinks everything for a smoke
run.
"""

import ml_collections

from mmgen_jax import config_lib


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(arg, objective="masked", runlocal=False)
    config = ml_collections.ConfigDict()
    config.trainer = "stages"
    config.stage_order = ("generator",)
    config.stages = ml_collections.ConfigDict()
    config.stages.generator = config_lib.load_sibling(
        __file__,
        "text",
        f"dataset=arithmetic,objective={args.objective}"
        + (",runlocal=True" if args.runlocal else ""),
    )
    config.stages.generator.name = "generator"
    config.final = dict(
        generator_stage="generator",
        tokenizer_stage="",
        scorer="arithmetic",
        per_class=1000 if not args.runlocal else 8,  # unconditional: the number of samples
        grid_per_class=1000 if not args.runlocal else 8,
        seed=0,
    )
    return config.lock()
