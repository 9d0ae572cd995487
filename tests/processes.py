"""Start several JAX processes joined by `jax.distributed` on this machine (loopback, gloo).

Each process gets `MMGEN_COORDINATOR_ADDRESS`, `MMGEN_NUM_PROCESSES` and `MMGEN_PROCESS_ID`,
which `mmgen_jax.sharding.initialize_distributed` reads, and one CPU device.
"""

import os
import socket
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One CPU device per process, whatever the test process itself was given.
SINGLE_DEVICE_ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distributed(command: list[str], count: int = 2, timeout: float = 600) -> list[str]:
    """Runs `command` as `count` processes of one distributed job; returns their outputs and
    fails (with the end of the output) unless every one exits 0."""
    port = free_port()
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(
                SINGLE_DEVICE_ENV,
                MMGEN_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                MMGEN_NUM_PROCESSES=str(count),
                MMGEN_PROCESS_ID=str(index),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(count)
    ]
    outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return outputs
