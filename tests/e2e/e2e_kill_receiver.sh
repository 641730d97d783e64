#!/usr/bin/env bash
# e2e_kill_receiver.sh PHASE   (PHASE: none | setup | bulk | iterate | stop-and-copy)
#
# Failure injection: the receiver dies (SIGKILL) while migrate's --json stats show PHASE ("none":
# nothing listens at all). Then migrate must exit non-zero, the source must keep running and pass
# its own full self-check, and a retry to a fresh receiver must succeed with a verified image.
#
# How each phase is held open long enough to be hit, on loopback:
#   setup          the receiver is SIGSTOPped before migrate starts (it accepts nothing, so the
#                  session cannot get past its handshake), killed once a setup line is seen;
#   bulk, iterate  --max-bandwidth 16 MB/s on 48 MiB written at 24 MB/s: bulk takes ~3 s and the
#                  iterations cannot converge quickly;
#   stop-and-copy  --downtime-limit 20000 lets the sender stop with ~48 MiB dirty; the final copy
#                  is not rate limited (as QEMU's completion stage), so the receiver sits in a
#                  network namespace behind a veth shaped to 128 mbit/s (root), where those
#                  48 MiB take seconds.
source "$(dirname "$0")/lib.sh"
PHASE=$1
e2e_init "kill-receiver-$PHASE"
require_commands run migrate receive inspect

WL_ARGS=(--mib 48 --rate 24)
start_workload pattern_writer "${WL_ARGS[@]}"
PORT=$($TOOL free-port)
OPTS=(--max-bandwidth 16000000)

case "$PHASE" in
  none)
    run_migrate first "127.0.0.1:$PORT"
    [ "$MIGRATE_RC" != 0 ] || fail "migrate to a port nobody listens on exited 0"
    ;;
  setup | bulk | iterate | stop-and-copy)
    ADDR=127.0.0.1
    if [ "$PHASE" = stop-and-copy ]; then
      require_root_netns
      make_netns 128mbit
      ADDR=$THERE_ADDR
      start_receiver first "$ADDR" "$PORT" "$NS"
    else
      start_receiver first "$ADDR" "$PORT"
    fi
    [ "$PHASE" = setup ] && kill -STOP "$RPID"
    [ "$PHASE" = stop-and-copy ] && OPTS+=(--downtime-limit 20000)
    [ "$PHASE" = iterate ] && OPTS+=(--downtime-limit 1)
    start_migrate first "$ADDR:$PORT" "${OPTS[@]}"
    $TOOL wait-phase "$W/first.json" "$PHASE" 60 "$MPID" ||
      fail "migrate never reported phase $PHASE (phases seen: $(stat_field first phases); exit: $(alive $MPID && echo running || echo ended))"
    SEEN=$(stat_field first phase)
    kill -KILL "$RPID"
    log "receiver killed while migrate reports phase $SEEN"
    wait_exit "$MPID" 60 || fail "migrate still running 60 s after the receiver was killed"
    MIGRATE_RC=$WAIT_STATUS
    log "migrate exit $MIGRATE_RC: $(tail -n 2 "$W/first.err" | tr '\n' ' ')"
    [ "$MIGRATE_RC" != 0 ] || fail "migrate exited 0 although the receiver was killed in $PHASE"
    [ "$(stat_field first phase)" != done ] || fail "stats say done although the receiver died"
    ;;
  *) fail "unknown phase $PHASE" ;;
esac

# The source must be running, unharmed: it self-checks the whole buffer.
sleep 1
alive "$WPID" || fail "source pid $WPID died after the failed migration: $(tail -n 3 "$W/workload.log")"
grep -q '^FAIL' "$W/workload.log" && fail "source reported: $(grep -m1 '^FAIL' "$W/workload.log")"
self_check
if "$PROCMIG" status "$WPID" >"$W/status.log" 2>&1; then
  log "procmig status: $(head -n 1 "$W/status.log")"
else
  fail "procmig status $WPID failed after the failed migration: $(head -n 3 "$W/status.log")"
fi

# A receiver killed after the first block has its image's temporary directory left behind
# (".tmp-first.store-XXXXXX" beside first.store); named as the retry's, it must be removed by the
# retry's receiver, which finds it unlocked.
shopt -s nullglob
left=("$W"/.tmp-first.store-*)
shopt -u nullglob
case "$PHASE" in
  bulk | iterate | stop-and-copy)
    [ "${#left[@]}" = 1 ] || fail "want one temporary image directory left by the killed receiver, found: ${left[*]:-none}"
    mv "${left[0]}" "$W/.tmp-retry.store-${left[0]##*-}"
    ;;
  *) [ "${#left[@]}" = 0 ] || fail "temporary image directory left although no block was sent: ${left[*]}" ;;
esac

# A retry to a fresh receiver succeeds.
PORT=$($TOOL free-port)
start_receiver retry 127.0.0.1 "$PORT"
run_migrate retry "127.0.0.1:$PORT"
expect_migrated retry --pattern
shopt -s nullglob
left=("$W"/.tmp-*)
shopt -u nullglob
[ "${#left[@]}" = 0 ] || fail "temporary image directories left after the retry: ${left[*]}"
pass "receiver killed in $PHASE: source kept running and self-checked, retry migrated: $($TOOL stats "$W/retry.json")"
