#!/usr/bin/env bash
# live_cpu.sh BUILD_DIR CHANNELS [RUNS]: where a live migration's CPU goes, thread by thread.
# Each run migrates a fresh `mem_workload --mib 1024 --fill random` (under `procmig run`) over
# loopback to `procmig receive --once --detach` with `perf record -a -F 1000` running, and prints
# the migration's total time and the CPU milliseconds (1 sample = 1 ms) of the sending process
# (the program and its agent's threads) and of the receiver, with each one's busiest thread.
# The restored copy is killed after each run. As root, with perf. A receiver that spent much
# more than usual is a run whose fresh memory came back through the host's faults (this VM
# returns free memory to its host): compare such runs apart.
set -euo pipefail
# The workload must not inherit the caller's other descriptors (a pipe to another process is
# refused at setup, as the migration cannot take it along).
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true
done
build=$(cd "${1:?usage: live_cpu.sh BUILD_DIR CHANNELS [RUNS]}" && pwd)
channels=${2:?usage: live_cpu.sh BUILD_DIR CHANNELS [RUNS]}
runs=${3:-3}
work=$(mktemp -d /tmp/procmig-live-cpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
P=$build/agent/procmig
for run in $(seq "$runs"); do
  port=$((46000 + RANDOM % 1000))
  "$P" receive --listen 127.0.0.1:$port --once --detach >"$work/recv.log" 2>&1 &
  rc=$!
  PROCMIG_CONTROL=$work/ctl PROCMIG_LOG=$work/agent.log "$P" run -- "$build/examples/mem_workload" \
    --mib 1024 --fill random --dirty-mbps 0 >"$work/wl.log" 2>&1 &
  wl=$!
  for _ in $(seq 100); do grep -q READY "$work/wl.log" && break; sleep 0.2; done
  perf record -a -F 1000 -o "$work/perf.data" >/dev/null 2>&1 &
  perf_pid=$!
  sleep 0.3
  migrated=0
  "$P" migrate "$wl" --to 127.0.0.1:$port --json --channels "$channels" >"$work/mig.log" 2>&1 ||
    migrated=$?
  sleep 0.2
  kill -INT $perf_pid
  wait $perf_pid || true
  if [ "$migrated" != 0 ]; then
    echo "run $run: migrate failed: $(tail -1 "$work/mig.log")"
    kill $rc "$wl" 2>/dev/null || true
    wait $rc "$wl" 2>/dev/null || true
    rm -f "$work/ctl" "$work/perf.data"*
    continue
  fi
  wait $rc || true
  host=$(sed -n 's/.*host pid \([0-9]*\).*/\1/p' "$work/recv.log")
  [ -n "$host" ] && kill "$host" 2>/dev/null || true
  wait "$wl" 2>/dev/null || true
  total=$(grep '^{' "$work/mig.log" | tail -1 | sed -n 's/.*"total_ms": *\([0-9]*\).*/\1/p')
  perf script -i "$work/perf.data" -F pid,tid 2>/dev/null | tr '/' ' ' |
    awk -v run="$run" -v total="${total:-?}" -v wl="$wl" -v rc="$rc" '
      $1 == wl { s[$2]++; st++ }
      $1 == rc { r[$2]++; rt++ }
      END {
        sb = 0; for (t in s) if (s[t] > sb) sb = s[t]
        rb = 0; for (t in r) if (r[t] > rb) rb = r[t]
        printf "run %s: total %s ms; cpu ms: sender %d (busiest thread %d), receiver %d (busiest thread %d)\n",
          run, total, st, sb, rt, rb
      }'
  rm -f "$work/ctl" "$work/perf.data"*
done
