#!/usr/bin/env bash
# From a fresh Debian 12 machine: installs what is missing, builds from scratch and runs every
# test (unit, component, kernel, e2e). Kernel tests exit 77 (skipped) with the reason when this
# kernel lacks the feature they test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BUILD_DIR=${BUILD_DIR:-build/test}
rm -rf "$BUILD_DIR"
bash scripts/build.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2 "$@"
