"""Trainers: the shared loop and one objective per model family, found by name."""

from mmgen_jax.trainers.autoregressive import AutoregressiveObjective
from mmgen_jax.trainers.classifier import ClassifierObjective
from mmgen_jax.trainers.generator import GeneratorObjective
from mmgen_jax.trainers.masked import MaskedDiffusionObjective
from mmgen_jax.trainers.tokenizer import TokenizerObjective

# config.trainer -> objective factory. Adding a model family = one objective + one entry here.
OBJECTIVES = {
    "autoregressive": AutoregressiveObjective,
    "classifier": ClassifierObjective,
    "generator": GeneratorObjective,
    "masked": MaskedDiffusionObjective,
    "tokenizer": TokenizerObjective,
}


def get_objective_factory(name: str):
    if name not in OBJECTIVES:
        raise ValueError(f"config.trainer={name!r} is not one of {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]
