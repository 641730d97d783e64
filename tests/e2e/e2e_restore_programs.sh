#!/usr/bin/env bash
# e2e_restore_programs.sh python3|asyncio|bc|zstd|xz|node
#
# A real, unmodified program that nobody here wrote is migrated live in the middle of a long
# computation and must finish at the destination with output byte-identical to an unmigrated
# run of the same command:
#   python3  a SHA-256 hash chain with a churning dict, progress lines flushed alternately to
#            stdout and stderr, both one regular file (`>out 2>&1`: one shared offset, so a
#            restore that reopened each on its own would overwrite lines), written before and
#            after the migration;
#   asyncio  python3's asyncio running four hash chains as tasks: its event loop holds an epoll
#            instance and a UNIX socketpair of its own (the loop's self-pipe), rebuilt at the
#            destination;
#   bc       `bc -l` computing pi to 2500 digits, its program read from a stdin pipe (fd 0);
#   zstd     `zstd -T2 -13` (a worker thread pool) compressing a generated 12 MiB file from its
#            input fd into an output file opened with O_TRUNC (reopened at its offset, not
#            truncated), then `zstd -t` on the result;
#   xz       `xz -T2 -6` (two compressing threads, 2 MiB blocks) compressing a generated 24 MiB
#            file to stdout (a regular file), then `xz -t` on the result. xz holds a pipe of its
#            own (both ends: its signal handler wakes its main loop through it), rebuilt at the
#            destination with whatever it held unread;
#   node     Node.js (V8: a JIT, a reserved pointer-compression cage, a garbage-collected heap,
#            worker threads, libuv's epoll instances, eventfds and pipes) running a SHA-256 chain
#            over a churning Map in slices between setImmediate callbacks.
# The reference run is unmigrated and plain (no agent). The migrated one runs under `procmig run`
# with its output in a regular file, is migrated once it has run about a second (and used some
# CPU, so it is mid-computation even on a loaded machine) to `procmig receive --once` without
# --store, which restores it and then waits for it, exiting with its status. Checks: migrate exits
# 0, the source exits 0, the receiver exits 0 (the program's status), and cmp of the outputs.
source "$(dirname "$0")/lib.sh"
PROG=$1
e2e_init "restore-program-$PROG"
require_commands run migrate receive
T0=$SECONDS

PY=/usr/bin/python3
# gen_input MIB: MIB MiB of deterministic, moderately compressible text in $W/input.
gen_input() {
  "$PY" - "$W/input" "$1" <<'EOF' || fail "generate the input"
import random, sys
r = random.Random(5)
words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9)))
         for _ in range(5000)]
with open(sys.argv[1], "w") as f:
    n = 0
    while n < int(sys.argv[2]) << 20:
        line = " ".join(r.choice(words) for _ in range(12)) + " %d\n" % r.getrandbits(40)
        f.write(line)
        n += len(line)
EOF
}

case "$PROG" in
  python3)
    [ -x "$PY" ] || skip "$PY is missing"
    cat >"$W/chain.py" <<'EOF'
import hashlib, sys
h = hashlib.sha256(b"procmig").digest()
d = {}
for i in range(6000000):
    h = hashlib.sha256(h).digest()
    d[h[:3]] = i
    if len(d) > 200000:
        d.clear()
    if i % 100000 == 0:
        print(i, h.hex(), len(d), flush=True, file=sys.stderr if i % 200000 else sys.stdout)
print("final", h.hex(), len(d))
EOF
    CMD=("$PY" "$W/chain.py")
    IN=/dev/null
    OUT=out+err
    ;;
  asyncio)
    [ -x "$PY" ] || skip "$PY is missing"
    cat >"$W/tasks.py" <<'EOF'
import asyncio, hashlib
async def chain(i, n):
    h = hashlib.sha256(b"procmig %d" % i).digest()
    for k in range(n):
        h = hashlib.sha256(h).digest()
        if k % 20000 == 0:
            await asyncio.sleep(0)
            if k % 200000 == 0:
                print(i, k, h.hex(), flush=True)
    return h.hex()
async def main():
    for h in await asyncio.gather(*(chain(i, 1200000) for i in range(4))):
        print("final", h)
asyncio.run(main())
EOF
    CMD=("$PY" "$W/tasks.py")
    IN=/dev/null
    OUT=out
    ;;
  bc)
    command -v bc >/dev/null || skip "bc is missing (scripts/setup.sh installs it)"
    echo "scale=2500; 4*a(1)" >"$W/pi.bc"
    CMD=("$(command -v bc)" -l)
    IN=pipe
    OUT=out
    ;;
  zstd)
    command -v zstd >/dev/null || skip "zstd is missing (scripts/setup.sh installs it)"
    gen_input 12
    CMD=("$(command -v zstd)" -q -T2 -13 -f "$W/input" -o)  # output path appended below
    IN=/dev/null
    OUT=file
    ;;
  xz)
    command -v xz >/dev/null || skip "xz is missing (scripts/setup.sh installs it)"
    # Two compressing threads (2 MiB blocks) and xz's own self-pipe (its signal wake-up).
    gen_input 24
    CMD=("$(command -v xz)" -T2 -6 --block-size=2MiB -c "$W/input")
    IN=/dev/null
    OUT=out
    ;;
  node)
    NODE=$(command -v node || command -v nodejs) || skip "node is missing (scripts/setup.sh installs nodejs)"
    # V8: a JIT (code pages made writable and executable in turn), gigabytes of reserved
    # PROT_NONE address space (its pointer-compression cage), a garbage-collected heap, worker
    # threads, libuv's epoll, eventfds and signal pipe; a timer (setImmediate) between slices.
    cat >"$W/chain.js" <<'EOF2'
const crypto = require("crypto");
let h = Buffer.from("procmig");
const live = new Map();
let i = 0;
function slice() {
  for (let k = 0; k < 20000; ++k, ++i) {
    h = crypto.createHash("sha256").update(h).digest();
    live.set(i % 50000, { n: i, s: h.toString("hex").slice(0, 16) });
    if (i % 100000 === 0) console.log(i, h.toString("hex"), live.size);
  }
  if (i < 1500000) setImmediate(slice);
  else console.log("final", h.toString("hex"), live.get(12345).s);
}
slice();
EOF2
    CMD=("$NODE" "$W/chain.js")
    IN=/dev/null
    OUT=out
    ;;
  *) fail "unknown program $PROG" ;;
esac

# run_prog OUTFILE [PREFIX...]: the program with its output in OUTFILE.
run_prog() {
  local outfile=$1
  shift
  local cmd=("$@" "${CMD[@]}")
  [ "$OUT" = file ] && cmd+=("$outfile")
  if [ "$IN" = pipe ]; then
    cat "$W/pi.bc" | "${cmd[@]}" >"$outfile"
  elif [ "$OUT" = file ]; then
    "${cmd[@]}" <"$IN" >/dev/null
  elif [ "$OUT" = out+err ]; then
    "${cmd[@]}" <"$IN" >"$outfile" 2>&1
  else
    "${cmd[@]}" <"$IN" >"$outfile"
  fi
}

log "reference run: ${CMD[*]}"
REF_START=$SECONDS
(close_fds_above_2; run_prog "$W/ref.out") 2>"$W/ref.err" || fail "reference run exited $?: $(tail -n 3 "$W/ref.err")"
REF_S=$((SECONDS - REF_START))
[ -s "$W/ref.out" ] || fail "reference run wrote nothing"
log "reference: $(wc -c <"$W/ref.out") bytes in ${REF_S} s"

PORT=$($TOOL free-port)
(
  close_fds_above_2
  exec "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once
) </dev/null >"$W/dst.receive.log" 2>&1 &
RPID=$!
track "$RPID"
wait_for 10 listening "$PORT" || fail "receiver never listened on 127.0.0.1:$PORT"

export PROCMIG_CONTROL="$W/prog.ctl"
(
  close_fds_above_2
  run_prog "$W/mig.out" "$PROCMIG" run --log "$W/agent.log" --
) 2>"$W/prog.err" &
SUB=$!
track "$SUB"
# The program's pid: the `procmig run` exec'd into it (bc's is the second stage of the pipeline).
wait_for 20 test -S "$PROCMIG_CONTROL" || fail "agent control socket never appeared"
WPID=""
find_prog() {
  local p exe
  exe=$(readlink -f "${CMD[0]}")
  for p in $SUB $(pgrep -P "$SUB"); do
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && WPID=$p && return 0
  done
  return 1
}
wait_for 10 find_prog
[ -n "$WPID" ] || fail "cannot find the program's pid under $SUB"
track "$WPID"
log "program pid $WPID: $(tr '\0' ' ' <"/proc/$WPID/cmdline")"
# About a second, and at least 0.3 s of CPU: mid-computation even when the machine is loaded.
START=$SECONDS
cpu_ticks() { awk '{print $14 + $15}' "/proc/$WPID/stat" 2>/dev/null || echo 0; }
sleep 1
HZ=$(getconf CLK_TCK)
wait_for 30 bash -c "[ \$(awk '{print \$14 + \$15}' /proc/$WPID/stat 2>/dev/null || echo 999999) -ge $((HZ * 3 / 10)) ]" ||
  fail "the program used less than 0.3 s of CPU in 30 s"
alive "$WPID" || fail "the program finished before it could be migrated ($((SECONDS - START)) s)"
log "migrating after $((SECONDS - START)) s, $(cpu_ticks) CPU ticks, $(stat -c %s "$W/mig.out" 2>/dev/null || echo 0) output bytes so far"
ls -l "/proc/$WPID/fd" | awk 'NR > 1 {print "  fd", $9, $10, $11}'
# --verify: a page the tracker missed fails the migration here rather than corrupting the run.
run_migrate dst "127.0.0.1:$PORT" --verify
[ "$MIGRATE_RC" = 0 ] || fail "migrate exited $MIGRATE_RC: $(tail -n 3 "$W/dst.err")"
[ "$(stat_field dst phase)" = done ] || fail "migrate: last stats phase '$(stat_field dst phase)', want done"
wait_for 15 bash -c "! kill -0 $WPID 2>/dev/null" || fail "source still running 15 s after migrate"
wait "$SUB"
SRC_STATUS=$?
[ "$SRC_STATUS" = 0 ] || fail "the source exited $SRC_STATUS after migrate, want 0"
wait_for 15 bash -c "grep -q 'restored pid' '$W/dst.receive.log'" ||
  fail "receiver reported no restored process: $(tail -n 5 "$W/dst.receive.log")"
restored_from_log "$W/dst.receive.log"
log "restored: host pid $RESTORED_PID, $RESTORED_THREADS thread(s), restore $RESTORE_MS ms, pause ${PAUSE_MS:-?} ms"
grep 'warning' "$W/dst.receive.log" | sed 's/^ */receiver: /'
wait_exit "$RPID" 120 || fail "the restored program did not finish within 120 s"
[ "$WAIT_STATUS" = 0 ] || fail "receive --once exited $WAIT_STATUS (the program's status): $(tail -n 5 "$W/dst.receive.log")"
cmp "$W/ref.out" "$W/mig.out" >"$W/cmp.log" 2>&1 ||
  fail "output differs from the unmigrated run: $(cat "$W/cmp.log"); sizes $(stat -c %s "$W/ref.out") / $(stat -c %s "$W/mig.out")"
if [ "$PROG" = zstd ]; then
  zstd -q -t "$W/mig.out" || fail "zstd -t rejects the migrated run's output"
fi
if [ "$PROG" = xz ]; then
  xz -t <"$W/mig.out" || fail "xz -t rejects the migrated run's output"
fi
pass "$PROG migrated mid-run finished with identical output ($(stat -c %s "$W/mig.out") bytes; reference ${REF_S} s); restore $RESTORE_MS ms, pause ${PAUSE_MS:-?} ms; $($TOOL stats "$W/dst.json"); test $((SECONDS - T0)) s"
