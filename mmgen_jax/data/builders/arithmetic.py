"""TFDS builder `arithmetic`: generated arithmetic statements such as `37+48=85`, offline.

A text dataset small enough to train a token generator on a CPU in minutes, with a score that
means something: a generated statement is either arithmetically correct or not
(`evaluation.SCORERS['arithmetic']`).

Each statement is `a op b = c` written without spaces, `op` one of `+`, `-`, `*` (equally
likely). Each operand first draws its number of digits, 1, 2 or 3 with probabilities
`DIGIT_PROBABILITIES` (at most 2 digits for `*`, so products stay at most 4 digits, like times
tables and `37*12=444`), then a value uniform among numbers of that many digits (0..9 for one
digit). For `-` the larger operand comes first, so results are never negative. The longest
statement has 12 characters (`999+999=1998`). Short operands are the most frequent, as small
numbers are in written text, so frequent statements (`3+4=7`) repeat in the training split.

Statements are drawn i.i.d. from `np.random.default_rng(SEED)` (with repeats) and each one is
assigned to a split by a hash of its text (`split_of`): about 1/32 of the distinct statements
belong to `test`, 1/32 to `validation`, the rest to `train`, so no test or validation statement
ever occurs in train, and every occurrence of a statement lands in the same split. `NUM_DRAWS`
draws give about 31,000 training, 1,000 validation and 1,000 test examples. Examples keep the
drawing order (`disable_shuffling=True`), identical on every machine.
"""

import functools
import hashlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

SEED = 0
OPERATORS = ("+", "-", "*")
MAX_DIGITS = {"+": 3, "-": 3, "*": 2}
DIGIT_PROBABILITIES = (0.5, 0.3, 0.2)  # of 1, 2, 3 digits (renormalised for shorter maxima)
NUM_DRAWS = 33_000
SPLIT_BUCKETS = 32  # split_of: hash bucket 0 -> test, 1 -> validation, the rest -> train
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
    cumulative = np.cumsum(DIGIT_PROBABILITIES[:max_digits])
    digits = 1 + int(np.searchsorted(cumulative / cumulative[-1], rng.random(), side="right"))
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(low, 10**digits))


def generate_statements(count: int, seed: int = SEED) -> list[str]:
    """`count` statements drawn i.i.d. (with repeats), in drawing order."""
    rng = np.random.default_rng(seed)
    statements = []
    for _ in range(count):
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        a, b = _operand(rng, MAX_DIGITS[op]), _operand(rng, MAX_DIGITS[op])
        if op == "-" and a < b:
            a, b = b, a
        statements.append(f"{a}{op}{b}={evaluate(a, op, b)}")
    return statements


def split_of(statement: str) -> str:
    """The split a statement belongs to, from a hash of its text (stable across machines)."""
    bucket = int(hashlib.sha256(statement.encode()).hexdigest(), 16) % SPLIT_BUCKETS
    return {0: "test", 1: "validation"}.get(bucket, "train")


def split_statements(seed: int = SEED) -> dict[str, list[str]]:
    """Split name -> its statements (with repeats, in drawing order)."""
    return {name: list(statements) for name, statements in _split_statements(seed).items()}


@functools.lru_cache(maxsize=2)
def _split_statements(seed: int) -> dict[str, tuple[str, ...]]:
    splits = {"train": [], "validation": [], "test": []}
    for statement in generate_statements(NUM_DRAWS, seed):
        splits[split_of(statement)].append(statement)
    return {name: tuple(statements) for name, statements in splits.items()}


class Arithmetic(tfds.core.GeneratorBasedBuilder):
    """Generated arithmetic statements as a TFDS text dataset named `arithmetic`."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "30000 / 1000 / 1000 distinct statements, seed 0.",
        "2.0.0": "i.i.d. draws favouring short operands; splits by a hash of the statement.",
    }

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
