#!/usr/bin/env bash
# From a fresh Debian 12 machine: installs what is missing, builds, and runs the main job.
# Until live migration lands (issues 4 and 5) the main job is: what this kernel offers
# (`procmig check`), then the transport demo: 1 GiB of pages streamed over loopback TCP through
# io_uring, checked by crc32c at the receiver.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BUILD_DIR=${BUILD_DIR:-build/demo}
bash scripts/build.sh
"$BUILD_DIR"/agent/procmig check
"$BUILD_DIR"/bench/transport/transport_bench --demo
