#!/usr/bin/env bash
# e2e_oracle.sh: the oracles themselves can fail. Runs without procmig: each workload whose
# memory layout the harness knows is corrupted through /proc/PID/mem by one byte and must report
# FAIL; untouched, it must report PASS; the image checker's self-test catches corrupt images.
source "$(dirname "$0")/lib.sh"
e2e_init oracle
$TOOL self-test || fail "e2e_tool self-test"

poke() {  # poke PID ADDR: flip one byte of the process's memory
  "$PYTHON" - "$1" "$2" <<'PY' || fail "write /proc/$1/mem at $2"
import sys
pid, addr = int(sys.argv[1]), int(sys.argv[2], 0)
with open("/proc/%d/mem" % pid, "r+b", buffering=0) as f:
    f.seek(addr)
    b = f.read(1)
    f.seek(addr)
    f.write(bytes([b[0] ^ 0x5a]))
PY
}

run_direct() {  # run_direct NAME ARGS...: the workload alone; sets WPID, READY_LINE
  local name=$1
  shift
  : >"$W/workload.log"
  "$EXAMPLES/$name" "$@" >"$W/workload.log" 2>&1 &
  WPID=$!
  track "$WPID"
  wait_for 30 grep -q '^READY' "$W/workload.log" || fail "$name never printed READY"
  READY_LINE=$(grep -m1 '^READY' "$W/workload.log")
}

expect_verdict() {  # expect_verdict PASS|FAIL WHAT
  kill -USR1 "$WPID"
  wait_exit "$WPID" 20 || fail "$2: no verdict within 20 s"
  local line
  line=$(grep -E '^(PASS|FAIL)' "$W/workload.log" | tail -n 1)
  [[ "$line" == "$1"* ]] || fail "$2: got '$line' (exit $WAIT_STATUS), want $1"
  log "$2: $line"
}

for w in "pattern_writer --mib 8 --rate 8" "demo_counter --mib 8" "mem_workload --mib 8"; do
  read -r -a argv <<<"$w"
  run_direct "${argv[@]}"
  expect_verdict PASS "${argv[0]} untouched"
  run_direct "${argv[@]}"
  addr=$(ready_field addr)
  bytes=$(ready_field bytes)
  # A byte in the last quarter of the buffer, past the first 64 bytes of its page.
  poke "$WPID" $((addr + bytes - bytes / 4 + 100))
  expect_verdict FAIL "${argv[0]} with one corrupt byte"
done
for w in heap_churn map_churn; do
  run_direct "$w"
  expect_verdict PASS "$w untouched"
done
pass "every oracle passes untouched state and catches a corrupt byte"
