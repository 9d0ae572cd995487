"""The CPU-only XLA flags are added for CPU runs only and never override the user's own flags."""

import os

import pytest

from mmgen_jax import xla_flags


@pytest.mark.parametrize(
    "platforms, before, after",
    [
        ("cpu", "", "--xla_disable_hlo_passes=cse_barrier_expander"),
        (
            "cpu",
            "--xla_force_host_platform_device_count=8",
            "--xla_force_host_platform_device_count=8 "
            "--xla_disable_hlo_passes=cse_barrier_expander",
        ),
        ("cpu", "--xla_disable_hlo_passes=foo", "--xla_disable_hlo_passes=foo"),
        ("tpu", "", ""),
        ("cuda,cpu", "--a=1", "--a=1"),
    ],
)
def test_configure_for_cpu(monkeypatch, platforms, before, after):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setenv("XLA_FLAGS", before)
    xla_flags.configure_for_cpu()
    assert os.environ["XLA_FLAGS"] == after
