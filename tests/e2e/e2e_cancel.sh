#!/usr/bin/env bash
# e2e_cancel.sh: `procmig cancel PID` while a bandwidth-capped migration is in its bulk stage:
# migrate exits non-zero, the stats do not say done, the source keeps running and passes its
# self-check, and the receiver stores no image.
source "$(dirname "$0")/lib.sh"
e2e_init cancel
require_commands run migrate receive cancel status
start_workload pattern_writer --mib 48 --rate 16
PORT=$($TOOL free-port)
start_receiver dst 127.0.0.1 "$PORT"
start_migrate dst "127.0.0.1:$PORT" --max-bandwidth 8000000
$TOOL wait-phase "$W/dst.json" bulk 30 "$MPID" || fail "migrate never reported bulk"
"$PROCMIG" cancel "$WPID" >"$W/cancel.log" 2>&1 || fail "procmig cancel exited $?: $(cat "$W/cancel.log")"
wait_exit "$MPID" 30 || fail "migrate still running 30 s after cancel"
[ "$WAIT_STATUS" != 0 ] || fail "migrate exited 0 after cancel"
[ "$(stat_field dst phase)" != done ] || fail "stats say done after cancel"
sleep 0.5
alive "$WPID" || fail "source exited after cancel"
self_check
wait_exit "$RPID" 30 || kill -KILL "$RPID"
[ -z "$(find "$W/dst.store" -name MANIFEST)" ] || fail "the receiver stored an image of a cancelled migration"
pass "cancel in bulk: migrate failed ($(stat_field dst phases)), source unharmed"
