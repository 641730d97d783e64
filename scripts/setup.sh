#!/usr/bin/env bash
# Installs, when missing, every Debian 12 package that procmig's build, tests, fuzzers and
# benchmarks need. Safe to run again: it installs nothing that is already there.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkgconf         # build
  liburing-dev zlib1g-dev libabsl-dev   # libraries
  doctest-dev                           # unit tests
  clang libclang-rt-14-dev              # libFuzzer targets and the sanitizer runtime
  iproute2 python3                      # e2e tests: network namespaces, netem, stats checks
  bc zstd xz-utils nodejs               # e2e restore tests: real programs migrated mid-run
  libjemalloc2 libtcmalloc-minimal4    # e2e: programs whose malloc and operator new are these
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
else
  echo "setup: all packages present"
fi
