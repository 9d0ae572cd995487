"""Scores for generated text: the arithmetic statements of the `arithmetic` dataset.

A statement is well formed when it reads `a op b=c` exactly (natural numbers without leading
zeros, op one of + - *, no spaces, nothing else), and correct when moreover a op b equals c.
`arithmetic_scores` gives the fractions of well-formed and correct statements among the samples,
and the fraction of samples that are correct statements copied from the training split (a
generator that only memorised would score high on correctness and on this).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mmgen_jax.data.builders import arithmetic

_NUMBER = r"(0|[1-9][0-9]*)"
STATEMENT = re.compile(rf"^{_NUMBER}([+\-*]){_NUMBER}={_NUMBER}$")


def parse_statement(text: str) -> tuple[int, str, int, int] | None:
    """(a, op, b, c) of a well-formed statement, else None."""
    match = STATEMENT.match(text)
    if match is None:
        return None
    a, op, b, c = match.groups()
    return int(a), op, int(b), int(c)


def is_correct(text: str) -> bool:
    """True for a well-formed statement whose arithmetic is right."""
    parsed = parse_statement(text)
    if parsed is None:
        return False
    a, op, b, c = parsed
    return arithmetic.evaluate(a, op, b) == c


def arithmetic_scores(
    texts: Sequence[str], training_statements: Iterable[str] = ()
) -> dict[str, float]:
    """Fractions of `texts` that are well formed, correct, and correct and in the training set."""
    if not texts:
        raise ValueError("no samples to score")
    training = set(training_statements)
    correct = [is_correct(text) for text in texts]
    copied = [ok and text in training for ok, text in zip(correct, texts, strict=True)]
    return {
        "parse_rate": sum(parse_statement(text) is not None for text in texts) / len(texts),
        "correct_rate": sum(correct) / len(texts),
        "correct_in_train_rate": sum(copied) / len(texts),
        "distinct_rate": len(set(texts)) / len(texts),
    }
