"""Test-wide setup that must happen before JAX or TensorFlow is imported.

JAX reads `XLA_FLAGS` once, at import: eight fake CPU devices let sharding and multi-device code
run on any laptop. Tests run on CPU unless `JAX_PLATFORMS` says otherwise, and TensorFlow (used
only by the data pipeline) is kept off any GPU so it never reserves accelerator memory.
"""

import os

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICE_COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_COUNT_FLAG}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from mmgen_jax import xla_flags  # noqa: E402  (imports no JAX)

xla_flags.configure_for_cpu()  # test what the entry points run
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (must follow the environment set-up above)

tf.config.set_visible_devices([], "GPU")
