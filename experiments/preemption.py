"""Kill training runs and resume them: nothing is lost and the result is the uninterrupted one.

  python experiments/preemption.py [--kills 5] [--steps 100] [--seed 0] [--workdir DIR]

1. SIGKILL: trains `--steps` steps of the tiny VQ-VAE (configs/vqvae.py:runlocal=True, a
   checkpoint every 5 steps) without interruption in DIR/straight. Then starts the same run in
   DIR/killed, kills it with SIGKILL at a random moment `--kills` times (each time after it has
   written at least one new checkpoint, so every restart resumes from a later step), restarts
   it each time, lets the last start finish, and compares the final parameters, EMA parameters
   and optimizer state of both runs (bitwise).
2. SIGTERM: starts a run in DIR/sigterm, sends SIGTERM once training is under way, and shows the
   exit status (0) and the step the run saved before leaving.
Prints one line per event; needs the embedded digits (built into $TFDS_DATA_DIR on first use).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir: str, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "mmgen_jax.main", "--config=configs/vqvae.py:runlocal=True",
        f"--workdir={workdir}", f"--config.training.total_steps={steps}",
        "--config.training.checkpoint_every=5", "--config.training.log_every=5",
        "--config.training.eval_every=1000",
    ]  # fmt: skip


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def start(workdir: str, steps: int) -> subprocess.Popen:
    return subprocess.Popen(
        command(workdir, steps), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, what: str) -> str:
    output, _ = process.communicate(timeout=900)
    if process.returncode != 0:
        sys.exit(f"{what} failed with status {process.returncode}:\n{output[-3000:]}")
    return output


def final_state(workdir: str):
    from mmgen_jax import checkpoint as checkpoint_lib
    from mmgen_jax import inference

    run = inference.load_trained(workdir, use_ema=False)
    ema = inference.load_trained(workdir, use_ema=True)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    meta = checkpointer.restore_meta(run.step)
    checkpointer.close()
    return run.step, run.variables["params"], ema.variables["params"], meta


def kill_and_resume(root: str, kills: int, steps: int, rng: random.Random) -> bool:
    straight, killed = os.path.join(root, "straight"), os.path.join(root, "killed")
    began = time.perf_counter()
    finish(start(straight, steps), "the uninterrupted run")
    print(f"uninterrupted run: {steps} steps in {time.perf_counter() - began:.1f} s")
    for kill in range(1, kills + 1):
        before = checkpoint_steps(killed)
        newest_before = before[-1] if before else 0
        if newest_before >= steps:
            print(f"kill {kill}: the run already finished; no more kills")
            break
        process = start(killed, steps)
        began = time.perf_counter()
        # Wait for a checkpoint newer than the one this start resumed from, then a random
        # moment more (possibly in the middle of the next write).
        while not [s for s in checkpoint_steps(killed) if s > newest_before]:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            print(f"kill {kill}: the run finished before the kill")
            break
        process.send_signal(signal.SIGKILL)
        process.communicate()
        after = checkpoint_steps(killed)
        print(
            f"kill {kill}: SIGKILL {time.perf_counter() - began:5.1f} s after start "
            f"(resumed from step {newest_before}); complete checkpoints now {after}"
        )
    began = time.perf_counter()
    output = finish(start(killed, steps), "the final resumed run")
    resumed = [line for line in output.splitlines() if "Resuming from" in line]
    print(
        f"final start: {resumed[-1].split('] ')[-1] if resumed else 'no resume'}; "
        f"finished in {time.perf_counter() - began:.1f} s"
    )
    step_a, params_a, ema_a, _ = final_state(straight)
    step_b, params_b, ema_b, _ = final_state(killed)
    same = step_a == step_b and all(
        np.array_equal(x, y)
        for x, y in zip(
            jax.tree.leaves(jax.device_get((params_a, ema_a))),
            jax.tree.leaves(jax.device_get((params_b, ema_b))),
            strict=True,
        )
    )
    print(
        f"final step {step_b} vs {step_a}; parameters and EMA parameters bitwise equal to the "
        f"uninterrupted run: {same}"
    )
    return same


def sigterm(root: str, steps: int) -> bool:
    workdir = os.path.join(root, "sigterm")
    process = start(workdir, 100 * steps)
    metrics = os.path.join(workdir, "metrics.jsonl")
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        if process.poll() is not None:
            sys.exit("the SIGTERM run ended before training started")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    saved = [line for line in output.splitlines() if "preempted: saved step" in line]
    print(
        f"SIGTERM: exit status {process.returncode}; "
        f"{saved[-1].split('] ')[-1] if saved else 'no save reported'}; "
        f"checkpoints on disk {checkpoint_steps(workdir)}"
    )
    return process.returncode == 0 and bool(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/mmgen_preemption")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    ok = kill_and_resume(args.workdir, args.kills, args.steps, random.Random(args.seed))
    ok = sigterm(args.workdir, args.steps) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
