#!/usr/bin/env bash
# e2e_checkpoint.sh: `procmig checkpoint PID --to DIR --leave-running`, then the same to a
# `procmig receive --store` over loopback (with --verify). Each time: checkpoint exits 0, the source keeps
# running and passes its full self-check, and the image has every digest ok and holds QEMU's
# pattern (a consistent snapshot: one cursor, at most one torn page).
source "$(dirname "$0")/lib.sh"
e2e_init checkpoint
require_commands run checkpoint receive inspect
start_workload pattern_writer --mib 32 --rate 32
sleep 0.5

log "procmig checkpoint $WPID --to $W/ckpt.store/image --leave-running"
mkdir -p "$W/ckpt.store"
timeout 120 "$PROCMIG" checkpoint "$WPID" --to "$W/ckpt.store/image" --leave-running \
  >"$W/ckpt.out.log" 2>&1 || fail "checkpoint to a directory exited $?: $(tail -n 3 "$W/ckpt.out.log")"
sleep 0.5
alive "$WPID" || fail "source exited after checkpoint --leave-running"
self_check
$TOOL image "$W/ckpt.store" --pattern "$(ready_field addr)" "$(ready_field bytes)" \
  "$(ready_field page)" >"$W/ckpt.image.log" 2>&1 || fail "checkpoint image: $(cat "$W/ckpt.image.log")"
log "$(cat "$W/ckpt.image.log")"
"$PROCMIG" inspect "$W/ckpt.store/image" >"$W/ckpt.inspect.log" 2>&1 ||
  fail "procmig inspect of the checkpoint exited $?"

PORT=$($TOOL free-port)
start_receiver net 127.0.0.1 "$PORT"
# --verify: the frozen copy reads its memory again after the last page and before the end of
# the stream; a page that is not what was sent fails the checkpoint.
log "procmig checkpoint $WPID --to 127.0.0.1:$PORT --leave-running --verify"
timeout 120 "$PROCMIG" checkpoint "$WPID" --to "127.0.0.1:$PORT" --leave-running --verify \
  >"$W/net.out.log" 2>&1 || fail "checkpoint to a receiver exited $?: $(tail -n 3 "$W/net.out.log")"
wait_exit "$RPID" 30 || fail "receiver still running 30 s after the checkpoint"
[ "$WAIT_STATUS" = 0 ] || fail "receiver exited $WAIT_STATUS: $(tail -n 5 "$W/net.receive.log")"
$TOOL image "$W/net.store" --pattern "$(ready_field addr)" "$(ready_field bytes)" \
  "$(ready_field page)" >"$W/net.image.log" 2>&1 || fail "received image: $(cat "$W/net.image.log")"
log "$(cat "$W/net.image.log")"
alive "$WPID" || fail "source exited after the second checkpoint --leave-running"
self_check
pass "two checkpoints with --leave-running: source kept running, both images consistent"
