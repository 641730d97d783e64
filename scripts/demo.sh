#!/usr/bin/env bash
# From a fresh Debian 12 machine: installs what is missing, builds, and runs the main job: a live
# migration over loopback. `demo_counter` (256 MiB of patterned memory, rewriting 1 MiB a second
# and printing a tick with a checksum every second) starts under the agent; `procmig receive`
# listens on 127.0.0.1; `procmig migrate` moves the running program live, with a progress line;
# the receiver checks every page and each block's digest, rebuilds the process (same pid, in a new
# PID namespace) and resumes it, then acks; the source exits. The program goes on ticking at the
# destination, in the same log file, and its full self-check passes there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build/demo}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$BUILD_DIR" procmig procmig_preload demo_counter
procmig="$BUILD_DIR/agent/procmig"
work=$(mktemp -d /tmp/procmig-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$procmig" check | sed -n '/dirty tracking backends/,$p'
echo

port=$((20000 + RANDOM % 20000))
"$procmig" receive --listen "127.0.0.1:$port" --once --detach \
  >"$work/receive.log" 2>&1 </dev/null &
pids+=($!)
receiver=$!

# The workload inherits only stdin/stdout/stderr: the agent (rightly) refuses to migrate a process
# holding a pipe to another process, and shells or CI runners may leave such fds open.
(
  for fd in /proc/self/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] && eval "exec $n>&-" 2>/dev/null
  done
  exec "$procmig" run --control "$work/agent.sock" --log "$work/agent.log" -- \
    "$BUILD_DIR/examples/demo_counter" --mib 256 >"$work/workload.log" 2>&1 </dev/null
) &
pids+=($!)
source_pid=$!
for _ in $(seq 100); do
  grep -q READY "$work/workload.log" 2>/dev/null && [ -S "$work/agent.sock" ] && break
  sleep 0.1
done
grep -q READY "$work/workload.log" || { echo "demo: workload did not start"; cat "$work/workload.log"; exit 1; }
sleep 2
echo "== the running program (pid $source_pid):"
tail -n 3 "$work/workload.log"
echo
echo "== procmig migrate $source_pid --to 127.0.0.1:$port"
"$procmig" migrate "$source_pid" --to "127.0.0.1:$port" --control "$work/agent.sock"
echo
wait "$receiver" || { echo "demo: the receiver failed:"; cat "$work/receive.log"; exit 1; }
echo "== receiver:"
cat "$work/receive.log"
if kill -0 "$source_pid" 2>/dev/null; then
  echo "demo: the source is still running after the ack" && exit 1
fi
restored=$(sed -n 's/.*(host pid \([0-9]*\),.*/\1/p' "$work/receive.log" | head -n 1)
[ -n "$restored" ] && kill -0 "$restored" 2>/dev/null ||
  { echo "demo: no restored process is running"; exit 1; }
pids+=("$restored")
echo
echo "== the source exited after the ack; the program runs on at the destination (host pid $restored):"
sleep 3
kill -USR2 "$restored"
sleep 1
tail -n 6 "$work/workload.log"
grep -q '^CHECK PASS' "$work/workload.log" || { echo "demo: no passing self-check after the restore"; exit 1; }
echo
echo "demo: done (files in $work)"
