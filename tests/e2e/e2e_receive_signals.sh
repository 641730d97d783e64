#!/usr/bin/env bash
# e2e_receive_signals.sh: `procmig receive --once` without --detach restores a live migration and
# then waits for the process, passing on the signals it is sent (as a foreground `procmig restore`
# does, see e2e_restore_image.sh restore_probe). restore_probe, its stdout a pipe at the source
# (so the receiver's own stdout at the destination: its log), is migrated over loopback. SIGUSR2
# sent to the receiver makes the restored probe self-check (PASS, in the receiver's log) while the
# receiver keeps waiting; SIGTERM sent to it makes the probe exit 0, and the receiver with it
# (status 0), leaving no restored process.
source "$(dirname "$0")/lib.sh"
e2e_init "receive-signals"
require_commands run migrate receive
T0=$SECONDS

PORT=$($TOOL free-port)
(
  close_fds_above_2
  exec "$PROCMIG" receive --listen "127.0.0.1:$PORT" --once
) </dev/null >"$W/dst.receive.log" 2>&1 &
RPID=$!
await_receiver dst 127.0.0.1 "$PORT" "" "live receiver (waits for the process)"

start_workload_io /dev/null pipe restore_probe --dir "$W"
self_check_pid "$WPID" "$W/workload.log" source
run_migrate dst "127.0.0.1:$PORT"
[ "$MIGRATE_RC" = 0 ] || fail "migrate exited $MIGRATE_RC: $(tail -n 3 "$W/dst.err")"
wait_exit "$WPID" 15 || fail "source pid $WPID still running 15 s after a successful migrate"
[ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after migrate, want 0"
wait_for 30 grep -q 'restored pid' "$W/dst.receive.log" ||
  fail "receiver: no 'restored pid' line: $(tail -n 3 "$W/dst.receive.log")"
restored_from_log "$W/dst.receive.log"
log "restored: host pid $RESTORED_PID; receiver pid $RPID waits for it"

self_check_pid "$RPID" "$W/dst.receive.log" "restored (SIGUSR2 sent to procmig receive)"
alive "$RPID" || fail "procmig receive exited on SIGUSR2"
kill -TERM "$RPID"
wait_exit "$RPID" 10 || fail "procmig receive still running 10 s after SIGTERM"
[ "$WAIT_STATUS" = 0 ] || fail "procmig receive exited $WAIT_STATUS after SIGTERM, want 0 (the probe's)"
! alive "$RESTORED_PID" || fail "the restored probe outlived SIGTERM sent to procmig receive"
pass "receive --once passed SIGUSR2 and SIGTERM on to the restored process; test $((SECONDS - T0)) s"
