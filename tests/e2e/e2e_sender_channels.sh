#!/usr/bin/env bash
# e2e_sender_channels.sh CHANNELS COMPRESS [WORKLOAD ARGS...]
#
# The sender's multi-channel and zlib paths end to end: pattern_writer (QEMU's pattern, one
# incrementing byte per page, so pages compress) under `procmig run`, migrated on loopback with
# `--channels CHANNELS --compress COMPRESS` to `procmig receive --once --store`, and checked:
# migrate exits 0 with a "done" stats line, the source exits 0, the receiver stored one image
# whose every block digest is ok and whose copy of the buffer holds the pattern, the manifest
# says CHANNELS channels, and (COMPRESS > 0) the stats count zlib pages and their bytes. With
# COMPRESS > 0 the migration also says --compress-always: loopback usually drains faster than zlib
# keeps up, and by default such pages go raw (the page sender's unit test covers that choice);
# here every page must go through zlib, none skipped.
source "$(dirname "$0")/lib.sh"
CHANNELS=$1
COMPRESS=$2
shift 2
e2e_init "sender-channels-$CHANNELS-z$COMPRESS"
require_commands run migrate receive inspect

PORT=$($TOOL free-port)
start_receiver dst 127.0.0.1 "$PORT"
start_workload pattern_writer "$@"
sleep 1
ALWAYS=()
[ "$COMPRESS" -gt 0 ] && ALWAYS=(--compress-always)
run_migrate dst "127.0.0.1:$PORT" --channels "$CHANNELS" --compress "$COMPRESS" "${ALWAYS[@]}"
expect_migrated dst --pattern

MANIFEST=$(find "$W/dst.store" -name MANIFEST | head -n 1)
GOT=$(sed -n 's/^channels //p' "$MANIFEST")
[ "$GOT" = "$CHANNELS" ] || fail "manifest says channels '$GOT', want $CHANNELS"
LAST=$(grep '^{' "$W/dst.json" | tail -n 1)
ZPAGES=$($PYTHON -c 'import json,sys; print(json.loads(sys.argv[1]).get("compressed_pages", 0))' "$LAST")
ZBYTES=$($PYTHON -c 'import json,sys; print(json.loads(sys.argv[1]).get("compressed_bytes", 0))' "$LAST")
ZSKIP=$($PYTHON -c 'import json,sys; print(json.loads(sys.argv[1])["compress_skipped_pages"])' "$LAST")
[ "$ZSKIP" = 0 ] || fail "$ZSKIP pages skipped zlib (--compress-always, or no --compress)"
if [ "$COMPRESS" -gt 0 ]; then
  [ "$ZPAGES" -gt 0 ] || fail "--compress $COMPRESS: no page was sent as zlib"
  # Pattern pages hold one non-zero byte each: a zlib stream of a few dozen bytes.
  [ "$ZBYTES" -lt $((ZPAGES * 512)) ] ||
    fail "--compress $COMPRESS: $ZPAGES zlib pages took $ZBYTES bytes (over 512 a page)"
else
  [ "$ZPAGES" = 0 ] || fail "no --compress, yet $ZPAGES zlib pages"
fi
pass "channels=$CHANNELS compress=$COMPRESS: zlib pages $ZPAGES ($ZBYTES bytes), $($TOOL stats "$W/dst.json")"
