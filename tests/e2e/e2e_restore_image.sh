#!/usr/bin/env bash
# e2e_restore_image.sh: one checkpoint image, restored three times.
#
# pattern_writer runs under `procmig run` with its stdout a pipe (so each restored copy writes to
# its own `procmig restore`'s stdout, not all three to one file at one offset); `procmig
# checkpoint PID --to DIR` stores it and the source exits 0; the image holds QEMU's pattern.
# Then `procmig restore DIR --detach` three times: each prints a distinct host pid, each copy
# runs in its own PID namespace with the old pid, passes its full self-check (the whole buffer
# holds the pattern, continued from the checkpoint) now and again a second later while all three
# keep rewriting the same addresses, so they share nothing. SIGUSR1 to the second copy makes it
# check and exit (PASS); the other two are unaffected. The image is unchanged by the restores.
#
# e2e_restore_image.sh restore_probe: the probe checkpointed (its file, private file mapping,
# guards, handler, altstack, blocked threads) and restored once from the image; it passes its
# self-check (SIGHUP count exact, file records continued) twice and exits on SIGTERM. Restored
# again with `procmig restore` in the foreground, it gets the SIGUSR2 and SIGTERM sent to that
# command (passed on), and the command exits with the probe's status.
source "$(dirname "$0")/lib.sh"
MODE=${1:-pattern_writer}
e2e_init "restore-image-$MODE"
require_commands run checkpoint restore inspect
T0=$SECONDS

if [ "$MODE" = restore_probe ]; then
  start_workload_io /dev/null pipe restore_probe --dir "$W"
  kill -HUP "$WPID"
  sleep 0.2
  self_check_pid "$WPID" "$W/workload.log" source
  [ "$(check_field hup)" = 1 ] || fail "source counted $(check_field hup) SIGHUPs, want 1"
  log "procmig checkpoint $WPID --to $W/ckpt"
  timeout 120 "$PROCMIG" checkpoint "$WPID" --to "$W/ckpt" >"$W/ckpt.out.log" 2>&1 ||
    fail "checkpoint exited $?: $(tail -n 3 "$W/ckpt.out.log")"
  wait_exit "$WPID" 15 || fail "source still running 15 s after checkpoint"
  [ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after checkpoint, want 0"
  IMG=$(dirname "$(find "$W/ckpt" -name MANIFEST | head -n 1)")
  # Files are not in the image: the second restore below gets the file back as it was here.
  cp "$W/probe.data" "$W/probe.data.at-checkpoint"
  (
    close_fds_above_2
    exec "$PROCMIG" restore "$IMG" --detach
  ) </dev/null >"$W/copy.log" 2>"$W/copy.err" || fail "restore exited $?: $(tail -n 3 "$W/copy.err")"
  restored_from_log "$W/copy.err"
  log "restored: host pid $RESTORED_PID, $RESTORED_THREADS thread(s), restore $RESTORE_MS ms"
  kill -HUP "$RESTORED_PID"
  sleep 0.2
  self_check_pid "$RESTORED_PID" "$W/copy.log" restored
  [ "$(check_field hup)" = 2 ] || fail "restored copy counted $(check_field hup) SIGHUPs in all, want 2"
  R1=$(check_field records)
  sleep 1
  self_check_pid "$RESTORED_PID" "$W/copy.log" "restored (1 s later)"
  [ "$(check_field records)" -gt "$R1" ] || fail "the restored copy stopped writing its file"
  kill -TERM "$RESTORED_PID"
  wait_for 10 bash -c "! kill -0 $RESTORED_PID 2>/dev/null" || fail "restored copy ignored SIGTERM"
  # In the foreground, `procmig restore` passes on what it is sent: SIGUSR2 (a self-check by
  # the process) while it waits, then SIGTERM, on which the probe exits 0, and so does the
  # command, with no restored process left.
  cat "$W/probe.data.at-checkpoint" >"$W/probe.data"
  (
    close_fds_above_2
    exec "$PROCMIG" restore "$IMG"
  ) </dev/null >"$W/fg.log" 2>"$W/fg.err" &
  FG=$!
  wait_for 30 grep -q 'restored pid' "$W/fg.err" ||
    fail "foreground restore: no 'restored pid' line: $(tail -n 3 "$W/fg.err")"
  restored_from_log "$W/fg.err"
  self_check_pid "$FG" "$W/fg.log" "foreground restore (SIGUSR2 sent to procmig restore)"
  alive "$FG" || fail "procmig restore exited on SIGUSR2"
  kill -TERM "$FG"
  wait_exit "$FG" 10 || fail "procmig restore still running 10 s after SIGTERM"
  [ "$WAIT_STATUS" = 0 ] || fail "procmig restore exited $WAIT_STATUS after SIGTERM, want 0 (the probe's)"
  ! alive "$RESTORED_PID" || fail "the restored probe outlived SIGTERM sent to procmig restore"
  pass "restore_probe restored from an image: restore $RESTORE_MS ms, $RESTORED_THREADS thread(s); test $((SECONDS - T0)) s"
fi
start_workload_io /dev/null pipe pattern_writer --mib 32 --rate 16
sleep 0.5
self_check_pid "$WPID" "$W/workload.log" source
OLD_PID=$(ready_field pid)

log "procmig checkpoint $WPID --to $W/ckpt"
timeout 120 "$PROCMIG" checkpoint "$WPID" --to "$W/ckpt" >"$W/ckpt.out.log" 2>&1 ||
  fail "checkpoint exited $?: $(tail -n 3 "$W/ckpt.out.log")"
wait_exit "$WPID" 15 || fail "source still running 15 s after checkpoint (without --leave-running)"
[ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after checkpoint, want 0"
IMG=$(dirname "$(find "$W/ckpt" -name MANIFEST | head -n 1)")
[ -f "$IMG/MANIFEST" ] || fail "no MANIFEST under $W/ckpt"
PATTERN=(--pattern "$(ready_field addr)" "$(ready_field bytes)" "$(ready_field page)")
$TOOL image "$W/ckpt" "${PATTERN[@]}" >"$W/ckpt.image.log" 2>&1 ||
  fail "checkpoint image: $(cat "$W/ckpt.image.log")"
log "$(cat "$W/ckpt.image.log")"
find "$IMG" -type f -exec md5sum {} + | sort >"$W/image.md5"

PIDS=()
for i in 1 2 3; do
  log "procmig restore $IMG --detach (copy $i)"
  (
    close_fds_above_2
    exec "$PROCMIG" restore "$IMG" --detach
  ) </dev/null >"$W/copy$i.log" 2>"$W/copy$i.err"
  rc=$?
  [ "$rc" = 0 ] || fail "restore (copy $i) exited $rc: $(tail -n 3 "$W/copy$i.err")"
  restored_from_log "$W/copy$i.err"
  printed=$(grep -m1 -E '^[0-9]+$' "$W/copy$i.log")
  [ "$printed" = "$RESTORED_PID" ] ||
    fail "restore --detach printed '$printed', its report says host pid $RESTORED_PID"
  [ "$RESTORED_NSPID" = "$OLD_PID" ] ||
    fail "copy $i has pid $RESTORED_NSPID in its namespace, want the old $OLD_PID"
  alive "$RESTORED_PID" || fail "copy $i ($RESTORED_PID) is not running"
  for p in "${PIDS[@]}"; do
    [ "$p" != "$RESTORED_PID" ] || fail "copy $i has the host pid $p of an earlier copy"
  done
  PIDS+=("$RESTORED_PID")
  log "copy $i: host pid $RESTORED_PID, restore $RESTORE_MS ms"
  RESTORE_TIMES+=("$RESTORE_MS")
done

for i in 1 2 3; do
  self_check_pid "${PIDS[$((i - 1))]}" "$W/copy$i.log" "copy $i"
done
sleep 1
for i in 1 2 3; do
  alive "${PIDS[$((i - 1))]}" || fail "copy $i died"
  self_check_pid "${PIDS[$((i - 1))]}" "$W/copy$i.log" "copy $i (1 s later)"
done

# Copy 2 checks itself and exits; 1 and 3 go on.
kill -USR1 "${PIDS[1]}"
wait_for 20 grep -q '^PASS' "$W/copy2.log" || fail "copy 2 printed no PASS after SIGUSR1: $(tail -n 2 "$W/copy2.log")"
wait_for 10 bash -c "! kill -0 ${PIDS[1]} 2>/dev/null" || fail "copy 2 still running after its final check"
log "copy 2: $(grep '^PASS' "$W/copy2.log")"
sleep 0.5
for i in 1 3; do
  self_check_pid "${PIDS[$((i - 1))]}" "$W/copy$i.log" "copy $i (after copy 2 exited)"
done

find "$IMG" -type f -exec md5sum {} + | sort >"$W/image.md5.after"
cmp -s "$W/image.md5" "$W/image.md5.after" || fail "the image changed while it was restored"
for i in 1 3; do kill -TERM "${PIDS[$((i - 1))]}"; done
for i in 1 3; do
  wait_for 10 bash -c "! kill -0 ${PIDS[$((i - 1))]} 2>/dev/null" || fail "copy $i ignored SIGTERM"
done
pass "one image restored 3 times (restore ${RESTORE_TIMES[*]} ms): three independent copies passed their self-checks; test $((SECONDS - T0)) s"
