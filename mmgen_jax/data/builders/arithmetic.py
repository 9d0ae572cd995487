"""TFDS builder `arithmetic`: generated arithmetic statements such as `37+48=85`, offline.

A text dataset small enough to train a token generator on a CPU in minutes, with a score that
means something: a generated statement is either arithmetically correct or not
(`evaluation.SCORERS['arithmetic']`).

Each statement is `a op b = c` written without spaces, `op` one of `+`, `-`, `*` (equally
likely). Operands are natural numbers with a number of digits drawn uniformly from 1..3 for `+`
and `-` and from 1..2 for `*` (so that products stay at most 4 digits, like times tables and
`37*12=444`), then a value uniform among numbers of that many digits (0..9 for one digit). For
`-` the larger operand comes first, so results are never negative. The longest statement has
12 characters (`999+999=1998`).

Statements are drawn from `np.random.default_rng(SEED)` until `sum(SPLIT_SIZES)` distinct ones
exist; in drawing order the first go to `test`, the next to `validation`, the rest to `train`, so
no test or validation statement occurs in train. Examples keep that order
(`disable_shuffling=True`), identical on every machine.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

SEED = 0
OPERATORS = ("+", "-", "*")
MAX_DIGITS = {"+": 3, "-": 3, "*": 2}
SPLIT_SIZES = {"test": 1000, "validation": 1000, "train": 30_000}  # in drawing order
ALPHABET = "0123456789+-*="  # every character a statement can contain
MAX_LENGTH = 12


def evaluate(a: int, op: str, b: int) -> int:
    """The value of `a op b`."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def _operand(rng: np.random.Generator, max_digits: int) -> int:
    digits = int(rng.integers(1, max_digits + 1))
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10**digits))


def generate_statements(count: int, seed: int = SEED) -> list[str]:
    """`count` distinct statements in drawing order (deterministic in `seed`)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}  # insertion-ordered set
    while len(seen) < count:
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        a, b = _operand(rng, MAX_DIGITS[op]), _operand(rng, MAX_DIGITS[op])
        if op == "-" and a < b:
            a, b = b, a
        seen.setdefault(f"{a}{op}{b}={evaluate(a, op, b)}", None)
    return list(seen)


def split_statements(seed: int = SEED) -> dict[str, list[str]]:
    """Split name -> its statements, cut from one drawing in `SPLIT_SIZES` order."""
    statements = generate_statements(sum(SPLIT_SIZES.values()), seed)
    splits, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        splits[name] = statements[start : start + size]
        start += size
    return splits


class Arithmetic(tfds.core.GeneratorBasedBuilder):
    """Generated arithmetic statements as a TFDS text dataset named `arithmetic`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "30000 / 1000 / 1000 distinct statements, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        """One text feature, stored in generation order."""
        return self.dataset_info_from_configs(
            description="Arithmetic statements 'a op b=c' (op in + - *), 1-3 digit operands.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        """The three disjoint splits; nothing is downloaded."""
        del dl_manager
        return {
            name: self._generate_examples(statements)
            for name, statements in split_statements().items()
        }

    def _generate_examples(self, statements: list[str]) -> Iterator[tuple[int, dict]]:
        for index, statement in enumerate(statements):
            yield index, {"text": statement}
