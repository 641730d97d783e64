#!/usr/bin/env bash
# e2e_migrate.sh WORKLOAD loopback|loopback-xbzrle|netns [WORKLOAD ARGS...]
#
# ZDTM-style: run WORKLOAD under `procmig run`, wait for READY, migrate it with --json to a
# `procmig receive --once --store` on loopback, or in a second network namespace over a veth pair
# shaped to 100 Mbit/s (so pre-copy must iterate and auto-converge must throttle), and check:
# migrate exits 0 with a "done" stats line and iterations, the source exits 0, the receiver exits
# 0 and stored one image whose every block digest is ok (and, for pattern_writer, whose copy of
# the buffer holds QEMU's pattern), `procmig inspect` accepts the image. loopback-xbzrle migrates
# with XBZRLE and a 256 MiB page cache, which must stay out of the migrated memory (the sender
# once migrated its own cache, and never converged).
source "$(dirname "$0")/lib.sh"
WORKLOAD=$1
MODE=$2
shift 2
e2e_init "migrate-$WORKLOAD-$MODE"
require_commands run migrate receive inspect

if [ "$MODE" = netns ]; then
  require_root_netns
  make_netns 100mbit
  PORT=7411
  start_receiver dst "$THERE_ADDR" "$PORT" "$NS"
  TARGET="$THERE_ADDR:$PORT"
else
  PORT=$($TOOL free-port)
  start_receiver dst 127.0.0.1 "$PORT"
  TARGET="127.0.0.1:$PORT"
fi
MIGRATE_ARGS=()
[ "$MODE" = loopback-xbzrle ] && MIGRATE_ARGS=(--xbzrle --xbzrle-cache 256M)

start_workload "$WORKLOAD" "$@"
sleep 1  # let it churn a little first
run_migrate dst "$TARGET" "${MIGRATE_ARGS[@]}"
PATTERN=
[ "$WORKLOAD" = pattern_writer ] && PATTERN=--pattern
expect_migrated dst $PATTERN

ITER=$(stat_field dst max_iteration)
THROTTLE=$(stat_field dst max_throttle)
if [ "$MODE" = netns ] && [ "$WORKLOAD" = pattern_writer ]; then
  # The writer dirties faster than half the link's rate: pre-copy has to iterate and
  # auto-converge has to throttle it, or the link shaping did not work.
  [ "$ITER" -ge 2 ] || fail "netns: only $ITER iteration(s) over a 100 Mbit/s link"
  [ "$THROTTLE" -gt 0 ] || fail "netns: auto-converge never throttled (dirty rate > half the send rate)"
fi
if [ "$MODE" = loopback-xbzrle ]; then
  TOTAL=$(stat_field dst total_bytes)
  [ "$TOTAL" -lt $((256 << 20)) ] ||
    fail "xbzrle: $TOTAL bytes of RAM blocks: the sender's 256 MiB page cache was migrated too"
fi
pass "$WORKLOAD over $MODE: $($TOOL stats "$W/dst.json")"
