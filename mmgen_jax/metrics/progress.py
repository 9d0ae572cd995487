"""Console progress for training loops: step/total, latest scalars, steps/s and ETA.

On a terminal this is a tqdm bar redrawn in place; when stdout is not a TTY (CI logs, cluster job
logs) a redrawing bar would fill the log with carriage-return noise, so one compact line is printed
at most every ``min_interval_s`` seconds instead, e.g.::

    train step 1200/5000 (24.0%) loss=0.0831 | 41.3 steps/s | ETA 0:01:32

Throughput is measured over a recent window of updates and starts at the first ``update`` call,
so the first step, which includes XLA compilation, never distorts steps/s or the ETA. Scalars are
only converted to Python floats when a line is drawn: converting a jax array blocks until the
step that produced it finishes, and doing that every step would stall asynchronous dispatch.
Only process 0 displays anything by default.
"""

from __future__ import annotations

import collections
import datetime
import sys
import time
from typing import Any, TextIO

import jax
import numpy as np
from tqdm import tqdm

__all__ = ["Progress"]


def _format_scalar(value: Any) -> str:
    """Compact rendering of a Python / numpy / jax scalar."""
    try:
        number = float(np.asarray(jax.device_get(value)).reshape(()))
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}"


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Progress display for a loop running from ``start_step`` to ``total_steps``.

    Args:
      total_steps: the final step number.
      start_step: the step the loop starts (or resumes) from.
      enabled: whether to display; defaults to ``jax.process_index() == 0``.
      desc: label shown before the step count.
      window: number of recent updates the steps/s estimate is averaged over.
      min_interval_s: least seconds between two drawn lines / bar refreshes. Defaults to 0.5 on
        a terminal and 5 otherwise.
      stream: where to write; defaults to ``sys.stdout``. Whether it is a TTY picks the mode.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        *,
        enabled: bool | None = None,
        desc: str = "train",
        window: int = 100,
        min_interval_s: float | None = None,
        stream: TextIO | None = None,
    ):
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)
        self.enabled = (jax.process_index() == 0) if enabled is None else bool(enabled)
        self.desc = desc
        self._stream = sys.stdout if stream is None else stream
        isatty = getattr(self._stream, "isatty", None)
        self._interactive = bool(isatty and isatty())
        if min_interval_s is None:
            min_interval_s = 0.5 if self._interactive else 5.0
        self._min_interval_s = float(min_interval_s)
        # (step, time) of recent updates; the first one marks the end of compilation.
        self._history: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=max(2, window)
        )
        self._step = self.start_step
        self._scalars: dict[str, Any] = {}
        self._last_drawn_time = -float("inf")
        self._bar = None
        if self.enabled and self._interactive:
            self._bar = tqdm(
                total=self.total_steps,
                initial=self.start_step,
                desc=desc,
                file=self._stream,
                dynamic_ncols=True,
                # Our own steps/s and ETA (which skip compilation) go in the postfix.
                bar_format=(
                    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
                ),
            )

    @property
    def steps_per_second(self) -> float | None:
        """Steps per second over the recent window; ``None`` until two updates were seen."""
        if len(self._history) < 2:
            return None
        (first_step, first_time), (last_step, last_time) = self._history[0], self._history[-1]
        if last_time <= first_time or last_step <= first_step:
            return None
        return (last_step - first_step) / (last_time - first_time)

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds to ``total_steps`` at the current rate; ``None`` if unknown."""
        rate = self.steps_per_second
        if rate is None:
            return None
        return max(0, self.total_steps - self._step) / rate

    def update(self, step: int, **scalars: Any) -> None:
        """Records that ``step`` has been reached, with the latest ``scalars`` (e.g. loss=...).

        Cheap when nothing is drawn: call it every step if convenient.
        """
        if not self.enabled:
            return
        now = time.perf_counter()
        self._step = int(step)
        self._history.append((self._step, now))
        if scalars:
            self._scalars = scalars
        is_last = self._step >= self.total_steps
        if is_last or now - self._last_drawn_time >= self._min_interval_s:
            self._draw()
            self._last_drawn_time = now

    def _status(self) -> str:
        """``"loss=0.123 | 41.3 steps/s | ETA 0:01:32"`` from what is known so far."""
        parts = []
        if self._scalars:
            parts.append(
                " ".join(f"{name}={_format_scalar(value)}" for name, value in self._scalars.items())
            )
        rate = self.steps_per_second
        if rate is not None:
            parts.append(f"{rate:.3g} steps/s")
            parts.append(f"ETA {_format_duration(self.eta_seconds)}")
        return " | ".join(parts)

    def _draw(self) -> None:
        status = self._status()
        if self._bar is not None:
            self._bar.n = min(self._step, self.total_steps)
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.refresh()
            return
        percent = 100.0 * self._step / self.total_steps if self.total_steps > 0 else 100.0
        line = f"{self.desc} step {self._step}/{self.total_steps} ({percent:.1f}%)"
        if status:
            line += " " + status
        print(line, file=self._stream, flush=True)

    def close(self) -> None:
        """Draws the final state (if not yet drawn) and releases the terminal line."""
        if not self.enabled:
            return
        if self._history and self._last_drawn_time < self._history[-1][1]:
            self._draw()
            self._last_drawn_time = time.perf_counter()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.enabled = False  # Further updates after close are ignored.

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
