#!/usr/bin/env bash
# DiT-XL/2 at 256x256 from the official weights: see experiments/reproduce_dit_xl2.sh.
#
#   bash experiments/reproduce_dit_xl2_256.sh WEIGHTS_DIR [OUT_DIR]
set -euo pipefail
exec bash "$(dirname "$0")/reproduce_dit_xl2.sh" 256 "$@"
