#!/usr/bin/env bash
# e2e_restore_stdio.sh live|image: stdio redirected by `--stdin/--stdout/--stderr PATH` of
# `procmig receive` (live restore) and `procmig restore DIR`.
#
# live: demo_counter (a "tick N checksum 0x... pages-rewritten M" line a second) runs with its
# stdout a regular file, which a restore would otherwise reopen at its offset, and is migrated to
# `receive --once --detach --stdout OUT`, OUT already holding a line. After the restore its new
# lines land in OUT after that line (appended), their ticks continue exactly where the source's
# stopped (no tick lost or repeated), every line has the exact format, its self-check answers in
# OUT, /proc/PID/fd/1 is OUT, and neither the source's stdout nor the receiver's got a line after
# the migration.
#
# image: restore_probe, its reader thread blocked in read() on a stdin FIFO, reads "ping 1" and is
# checkpointed; `procmig restore DIR --detach --stdin IN --stdout OUT`, IN holding "ping 2" and
# "ping 3": the restored thread reads both from IN, then EOF, and the self-check in OUT says
# stdin_lines=3 stdin_eof=1; the source's stdout and the restore command's got nothing more.
#
# Both: a bad path fails with the exact message and a non-zero status, before anything is
# restored (restore) or listened on (receive); --stdout with --store is a usage error.
source "$(dirname "$0")/lib.sh"
MODE=${1:-live}
e2e_init "restore-stdio-$MODE"
require_commands run checkpoint migrate receive restore
T0=$SECONDS

# procs_of EXE: how many processes run EXE (a restored process's exe link is its old program).
procs_of() {
  local p n=0
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$1" ] && n=$((n + 1))
  done
  echo "$n"
}

# expect_error WANT_MESSAGE CMD...: CMD exits non-zero, prints nothing on stdout and exactly
# WANT_MESSAGE on stderr.
expect_error() {
  local want=$1 rc
  shift
  (
    close_fds_above_2
    exec timeout 20 "$@"
  ) </dev/null >"$W/bad.out" 2>"$W/bad.err"
  rc=$?
  [ "$rc" != 0 ] || fail "$* exited 0, want an error"
  [ "$rc" != 124 ] || fail "$* still running after 20 s (it should fail at once)"
  [ "$(cat "$W/bad.err")" = "$want" ] || fail "$*: stderr '$(cat "$W/bad.err")', want '$want'"
  [ ! -s "$W/bad.out" ] || fail "$*: printed '$(head -n 2 "$W/bad.out")' on stdout, want nothing"
  BAD_RC=$rc
  log "as expected ($rc): $want"
}

if [ "$MODE" = live ]; then
  [ -x "$EXAMPLES/demo_counter" ] || skip "$EXAMPLES/demo_counter not built"
  # Bad paths: the exact error, and the receiver never listens.
  PORT=$($TOOL free-port)
  expect_error "procmig receive: --stdout /nonexistent-procmig-dir/out.log: open: ENOENT (No such file or directory)" \
    "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once --detach --stdout /nonexistent-procmig-dir/out.log
  [ "$BAD_RC" = 1 ] || fail "receive with a bad --stdout exited $BAD_RC, want 1"
  expect_error "procmig receive: --stderr $W: open: EISDIR (Is a directory)" \
    "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once --stderr "$W"
  expect_error "procmig receive: --stdin /nonexistent-procmig-dir/in: open: ENOENT (No such file or directory)" \
    "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once --stdin /nonexistent-procmig-dir/in --stdout "$W/never.log"
  [ ! -e "$W/never.log" ] || fail "--stdout was created although --stdin failed first"
  expect_error "procmig receive: --stdout goes with a live restore, not --store" \
    "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once --store "$W/store" --stdout "$W/out.log"
  [ "$BAD_RC" = 2 ] || fail "receive --store --stdout exited $BAD_RC, want 2 (usage)"
  listening "$PORT" && fail "something listens on $PORT after the failed receivers"

  PAGE=$(getconf PAGESIZE)
  PER_TICK=$(((1 << 20) / PAGE))
  OUT=$W/redirected.log
  echo "an earlier line" >"$OUT"
  RECEIVE_ARGS="--stdout $OUT"
  start_live_receiver dst 127.0.0.1 "$PORT"
  start_workload_io /dev/null file demo_counter --mib 8
  wait_for 10 grep -q '^tick 2 ' "$W/workload.log" || fail "demo_counter printed no 'tick 2' at the source"
  self_check_pid "$WPID" "$W/workload.log" source
  run_migrate dst "127.0.0.1:$PORT"
  [ "$MIGRATE_RC" = 0 ] || fail "migrate exited $MIGRATE_RC: $(tail -n 3 "$W/dst.err")"
  wait_exit "$WPID" 15 || fail "source pid $WPID still running 15 s after a successful migrate"
  [ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after migrate, want 0"
  cp "$W/workload.log" "$W/workload.at-exit"
  wait_exit "$RPID" 30 || fail "receiver (--detach) still running 30 s after migrate"
  [ "$WAIT_STATUS" = 0 ] || fail "receiver exited $WAIT_STATUS: $(tail -n 5 "$W/dst.receive.log")"
  restored_from_log "$W/dst.receive.log"
  log "restored: host pid $RESTORED_PID, restore $RESTORE_MS ms"
  [ "$(readlink "/proc/$RESTORED_PID/fd/1")" = "$OUT" ] ||
    fail "restored fd 1 is '$(readlink "/proc/$RESTORED_PID/fd/1")', want $OUT"
  LAST_SRC=$(sed -n 's/^tick \([0-9]*\) .*/\1/p' "$W/workload.log" | tail -n 1)
  wait_for 15 bash -c "[ \$(grep -c '^tick' '$OUT') -ge 3 ]" ||
    fail "fewer than 3 tick lines in $OUT 15 s after the restore: $(tail -n 3 "$OUT")"
  self_check_pid "$RESTORED_PID" "$OUT" restored
  wait_for 5 bash -c "[ \$(grep -c '^tick' '$OUT') -ge 4 ]" || fail "no tick after the self-check"
  # OUT: the earlier line (appended to, not truncated), then ticks LAST_SRC+1, +2, ... each in
  # the exact format, with the one CHECK line among them.
  head -n 1 "$OUT" | grep -qx "an earlier line" || fail "$OUT lost its first line: $(head -n 1 "$OUT")"
  BAD=$(tail -n +2 "$OUT" | awk -v next_tick=$((LAST_SRC + 1)) -v per=$PER_TICK '
    /^CHECK PASS demo_counter: [0-9]+ pages intact at tick [0-9]+$/ { next }
    {
      # (no {16}: mawk has no interval expressions)
      if ($0 !~ /^tick [0-9]+ checksum 0x[0-9a-f]+ pages-rewritten [0-9]+$/ || length($4) != 18) {
        print "bad line: " $0; exit
      }
      if ($2 != next_tick) { print "tick " $2 ", want " next_tick; exit }
      if ($6 != $2 * per) { print "tick " $2 " rewrote " $6 " pages, want " $2 * per; exit }
      next_tick++
    }')
  [ -z "$BAD" ] || fail "$OUT: $BAD"
  [ "$(grep -c '^CHECK' "$OUT")" = 1 ] || fail "$OUT has $(grep -c '^CHECK' "$OUT") CHECK lines, want 1"
  cmp -s "$W/workload.log" "$W/workload.at-exit" ||
    fail "the source's stdout got lines after the migration: $(tail -n 2 "$W/workload.log")"
  grep -q '^tick' "$W/dst.receive.log" && fail "the receiver's stdout got tick lines"
  N=$(grep -c '^tick' "$OUT")
  kill -TERM "$RESTORED_PID"
  wait_for 10 bash -c "! kill -0 $RESTORED_PID 2>/dev/null" || fail "restored process ignored SIGTERM"
  pass "demo_counter restored live with --stdout: ticks $((LAST_SRC + 1))..$((LAST_SRC + N)) appended to the file, the source's and receiver's stdout untouched; test $((SECONDS - T0)) s"
fi

[ "$MODE" = image ] || fail "unknown mode $MODE (live or image)"
[ -x "$EXAMPLES/restore_probe" ] || skip "$EXAMPLES/restore_probe not built"
mkfifo "$W/src.fifo" || fail "mkfifo"
exec 7<>"$W/src.fifo"  # the write end, held until the test exits
start_workload_io "$W/src.fifo" file restore_probe --dir "$W"
[ "$(ready_field stdin)" = reader ] || fail "the probe has no stdin reader: $READY_LINE"
# check_until_lines PID LOG WHO N: self-checks (each must pass) until one reports stdin_lines=N,
# for up to 10 s (the reader thread may not have read yet on a loaded machine); sets CHECKS to
# the number of checks made.
check_until_lines() {
  local deadline=$((SECONDS + 10))
  CHECKS=0
  while :; do
    self_check_pid "$1" "$2" "$3"
    CHECKS=$((CHECKS + 1))
    [ "$(check_field stdin_lines)" = "$4" ] && return 0
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}
echo "ping 1" >&7
check_until_lines "$WPID" "$W/workload.log" source 1 ||
  fail "source read $(check_field stdin_lines) stdin lines, want 1"
log "procmig checkpoint $WPID --to $W/ckpt"
timeout 120 "$PROCMIG" checkpoint "$WPID" --to "$W/ckpt" >"$W/ckpt.out.log" 2>&1 ||
  fail "checkpoint exited $?: $(tail -n 3 "$W/ckpt.out.log")"
wait_exit "$WPID" 15 || fail "source still running 15 s after checkpoint"
[ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after checkpoint, want 0"
cp "$W/workload.log" "$W/workload.at-exit"
IMG=$(dirname "$(find "$W/ckpt" -name MANIFEST | head -n 1)")
[ -f "$IMG/MANIFEST" ] || fail "no MANIFEST under $W/ckpt"

# Bad paths: the exact error, nothing restored (no process runs the probe's program).
BEFORE=$(procs_of "$EXAMPLES/restore_probe")
expect_error "procmig restore: --stdin $W/missing.in: open: ENOENT (No such file or directory)" \
  "$PROCMIG" restore "$IMG" --stdin "$W/missing.in" --stdout "$W/never.log"
[ "$BAD_RC" = 1 ] || fail "restore with a bad --stdin exited $BAD_RC, want 1"
[ ! -e "$W/never.log" ] || fail "--stdout was created although --stdin failed first"
expect_error "procmig restore: --stdout /nonexistent-procmig-dir/out: open: ENOENT (No such file or directory)" \
  "$PROCMIG" restore "$IMG" --stdout /nonexistent-procmig-dir/out
[ "$(procs_of "$EXAMPLES/restore_probe")" = "$BEFORE" ] ||
  fail "a failed restore left a process running $EXAMPLES/restore_probe"

printf 'ping 2\nping 3\n' >"$W/in.txt"
OUT=$W/redirected.log
log "procmig restore $IMG --detach --stdin $W/in.txt --stdout $OUT"
(
  close_fds_above_2
  exec "$PROCMIG" restore "$IMG" --detach --stdin "$W/in.txt" --stdout "$OUT"
) </dev/null >"$W/copy.log" 2>"$W/copy.err" || fail "restore exited $?: $(tail -n 3 "$W/copy.err")"
restored_from_log "$W/copy.err"
log "restored: host pid $RESTORED_PID, $RESTORED_THREADS thread(s), restore $RESTORE_MS ms"
# The count the failed restores were checked with sees this one (it can fail).
[ "$(procs_of "$EXAMPLES/restore_probe")" = $((BEFORE + 1)) ] ||
  fail "$(procs_of "$EXAMPLES/restore_probe") process(es) run $EXAMPLES/restore_probe, want $((BEFORE + 1))"
[ "$(cat "$W/copy.log")" = "$RESTORED_PID" ] ||
  fail "restore's stdout is '$(head -c 200 "$W/copy.log")', want only the pid $RESTORED_PID"
[ "$(readlink "/proc/$RESTORED_PID/fd/0")" = "$W/in.txt" ] ||
  fail "restored fd 0 is '$(readlink "/proc/$RESTORED_PID/fd/0")', want $W/in.txt"
[ "$(readlink "/proc/$RESTORED_PID/fd/1")" = "$OUT" ] ||
  fail "restored fd 1 is '$(readlink "/proc/$RESTORED_PID/fd/1")', want $OUT"
check_until_lines "$RESTORED_PID" "$OUT" restored 3 ||
  fail "restored probe read $(check_field stdin_lines) stdin lines in all, want 3 (1 before, 2 from the file): $CHECK_LINE"
grep -q ' stdin_eof=1 ' <<<"$CHECK_LINE" || fail "restored probe did not see the file's end: $CHECK_LINE"
# OUT holds the self-checks' lines and nothing else.
[ "$(grep -c . "$OUT")" = "$CHECKS" ] && [ "$(grep -c '^CHECK PASS restore_probe: ' "$OUT")" = "$CHECKS" ] ||
  fail "$OUT has $(grep -c . "$OUT") lines, want only the $CHECKS CHECK line(s): $(head -n 3 "$OUT")"
cmp -s "$W/workload.log" "$W/workload.at-exit" ||
  fail "the source's stdout got lines after the checkpoint: $(tail -n 2 "$W/workload.log")"
[ "$(cat "$W/copy.log")" = "$RESTORED_PID" ] || fail "restore's stdout got more than the pid"
kill -TERM "$RESTORED_PID"
wait_for 10 bash -c "! kill -0 $RESTORED_PID 2>/dev/null" || fail "restored probe ignored SIGTERM"
pass "restore_probe restored from an image with --stdin/--stdout: read 'ping 2', 'ping 3' and EOF from the file, answered in the other; test $((SECONDS - T0)) s"
