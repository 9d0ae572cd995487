"""What a trained arithmetic generator knows: the result of `a op b=` completed by the model.

  python experiments/arithmetic_probe.py --workdir runs/text_arithmetic/generator [--max 300]

For statements of the `arithmetic` dataset (train and test splits, grouped by operand length),
the model is given `a op b=` and completes the rest greedily:
  * masked diffusion: everything after `=` (result and padding) starts masked; each call
    reveals the single most confident masked position with its most likely token,
  * autoregressive: token by token, the most likely next token.
It reports the fraction completed exactly (result digits, then padding). This separates
knowing the arithmetic from sampling: a generator whose samples are rarely correct may know
the results and lose them in sampling, or not know them at all. Only character-tokenized text
models (`configs/text.py` with `tokenizer='chars'`) are probed.
"""

from __future__ import annotations

import argparse
import collections

import jax
import jax.numpy as jnp
import numpy as np

from mmgen_jax import inference
from mmgen_jax.data import text as text_data
from mmgen_jax.data.builders import arithmetic
from mmgen_jax.trainers import autoregressive


def _encode(statement: str, info: dict) -> list[int]:
    alphabet = info["alphabet"]
    ids = [text_data.FIRST_TOKEN_ID + alphabet.index(c) for c in statement]
    return ids + [info["pad_id"]] * (info["seq_len"] - len(ids))


def complete_masked(run, tokens: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Masked-diffusion completion: reveal the most confident masked position per call."""
    objective = run.objective
    params = run.variables["params"]
    model_fn = jax.jit(objective._model_fn(params))
    mask_id = objective.mask_id
    z = np.where(known, tokens, mask_id)
    for _ in range(int((~known).sum(axis=1).max())):
        masked = z == mask_id
        t = jnp.asarray(masked.mean(axis=1), jnp.float32)
        logits = np.asarray(model_fn(jnp.asarray(z), t, None), np.float64)[..., :mask_id]
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        best = log_probs.argmax(-1)
        confidence = np.where(masked, log_probs.max(-1), -np.inf)
        position = confidence.argmax(-1)
        rows = np.flatnonzero(masked.any(axis=1))
        z[rows, position[rows]] = best[rows, position[rows]]
    return z


def complete_autoregressive(run, tokens: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Greedy left-to-right completion after the known prefix of every row."""
    objective = run.objective
    model_fn = jax.jit(objective._model_fn(run.variables["params"]))
    z = tokens.copy()
    first = int(known.sum(axis=1).min())
    for position in range(first, z.shape[1]):
        inputs = autoregressive.shift_right(jnp.asarray(z), objective.start_id)
        log_probs = autoregressive.next_token_log_probs(model_fn(inputs, None), objective.start_id)
        best = np.asarray(jnp.argmax(log_probs[:, position], axis=-1))
        fill = ~known[:, position]
        z[fill, position] = best[fill]
    return z


def operand_lengths(statement: str) -> str:
    """'37+5=42' -> '2,1': the digit counts of the two operands."""
    left = statement.split("=")[0]
    for op in arithmetic.OPERATORS:
        if op in left:
            a, b = left.split(op)
            return f"{len(a)},{len(b)}"
    raise ValueError(f"no operator in {statement!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained text generator's workdir")
    parser.add_argument("--max", type=int, default=300, help="statements per group and split")
    args = parser.parse_args()

    run = inference.load_trained(args.workdir)
    info = run.info
    if info.get("tokenizer") != "chars" or set(arithmetic.ALPHABET) - set(info["alphabet"]):
        raise ValueError(f"{args.workdir} is not a character-level arithmetic model")
    complete = complete_masked if hasattr(run.objective, "mask_id") else complete_autoregressive
    splits = arithmetic.split_statements()
    print(f"{args.workdir}: {type(run.objective).__name__}, step {run.step}")
    print(f"{'split':<6} {'operand digits':>14} {'statements':>10} {'exact':>7}")
    for split in ("train", "test"):
        groups = collections.defaultdict(list)
        for statement in sorted(set(splits[split])):
            groups[operand_lengths(statement)].append(statement)
        for name in sorted(groups):
            chosen = groups[name][: args.max]
            tokens = np.array([_encode(s, info) for s in chosen])
            prefix = np.array([s.index("=") + 1 for s in chosen])
            known = np.arange(tokens.shape[1])[None] < prefix[:, None]
            completed = complete(run, tokens, known)
            exact = np.mean(np.all(completed == tokens, axis=1))
            print(f"{split:<6} {name:>14} {len(chosen):>10} {exact:7.1%}")


if __name__ == "__main__":
    main()
