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
source "$(dirname "$0")/lib.sh"
e2e_init restore-image
require_commands run checkpoint restore inspect
T0=$SECONDS
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
