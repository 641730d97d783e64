#!/usr/bin/env bash
# e2e_verify_files.sh image|live: a file mapped by the program changed at the destination with
# its size and mtime kept (what `touch -d @...` after an edit leaves): only its content says so.
#
# image: restore_probe (a MAP_PRIVATE mapping of DIR/probe.map, odd pages rewritten) is
# checkpointed to a directory and exits; one byte of an unmodified page of probe.map changes and
# the file gets its old mtime back; `procmig restore DIR` must fail with exactly
#   procmig restore: restore IMG: cannot restore pid P here: MAP: crc32c 0xNEW here, 0xOLD at
#   the source (bytes 0..65536 of the file)
# (the crc32c values computed here) and nothing of the program may be left running.
#
# live: the receiver runs in its own mount namespace where probe.map is a changed copy (same
# size, same mtime) bind-mounted over the path; the source's file is untouched. `procmig
# migrate` must fail before any memory is sent, naming the receiver's reason, the receiver must
# exit with it, and the source must keep running and pass its self-check (SIGUSR2 -> CHECK PASS).
source "$(dirname "$0")/lib.sh"
MODE=${1:-image}
e2e_init "verify-files-$MODE"
require_commands run checkpoint restore receive migrate
T0=$SECONDS

# crc32c FILE: "0x%08x" of the whole file (Castagnoli, as base/crc32c.h).
crc32c() {
  $PYTHON - "$1" <<'PY'
import sys
poly, table = 0x82F63B78, []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ poly if c & 1 else c >> 1
    table.append(c)
crc = 0xFFFFFFFF
for b in open(sys.argv[1], "rb").read():
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
print("0x%08x" % (crc ^ 0xFFFFFFFF))
PY
}

# poke FILE OFFSET [MTIME_NS_FROM]: flips the byte at OFFSET and sets the mtime back to FILE's
# own (or MTIME_NS_FROM's) mtime to the nanosecond; prints "size mtime_ns" after.
poke() {
  $PYTHON - "$@" <<'PY'
import os, sys
path, off = sys.argv[1], int(sys.argv[2])
ref = os.stat(sys.argv[3] if len(sys.argv) > 3 else path)
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0x5a]))
os.utime(path, ns=(ref.st_atime_ns, ref.st_mtime_ns))
st = os.stat(path)
print(st.st_size, st.st_mtime_ns)
PY
}

stamp() { $PYTHON -c 'import os,sys; s=os.stat(sys.argv[1]); print(s.st_size, s.st_mtime_ns)' "$1"; }

start_workload_io /dev/null pipe restore_probe --dir "$W"
self_check_pid "$WPID" "$W/workload.log" source
OLD_PID=$(ready_field pid)
MAP=$(realpath "$W/probe.map")
PAGE=$(getconf PAGESIZE)
SIZE=$(stat -c %s "$MAP")
BEFORE=$(crc32c "$MAP")
STAMP=$(stamp "$MAP")

if [ "$MODE" = image ]; then
  log "procmig checkpoint $WPID --to $W/ckpt"
  timeout 120 "$PROCMIG" checkpoint "$WPID" --to "$W/ckpt" >"$W/ckpt.out.log" 2>&1 ||
    fail "checkpoint exited $?: $(tail -n 3 "$W/ckpt.out.log")"
  wait_exit "$WPID" 15 || fail "source still running 15 s after checkpoint"
  IMG=$(dirname "$(find "$W/ckpt" -name MANIFEST | head -n 1)")
  [ -f "$IMG/MANIFEST" ] || fail "no MANIFEST under $W/ckpt"
  # Page 2: never written by the program, so the restore maps it from the file.
  AFTER_STAMP=$(poke "$MAP" $((2 * PAGE + 5)))
  [ "$AFTER_STAMP" = "$STAMP" ] || fail "size/mtime changed: '$STAMP' -> '$AFTER_STAMP'"
  AFTER=$(crc32c "$MAP")
  [ "$AFTER" != "$BEFORE" ] || fail "the poke did not change the crc32c"
  log "changed $MAP keeping size and mtime ($STAMP): crc32c $BEFORE -> $AFTER"
  (
    close_fds_above_2
    exec timeout 60 "$PROCMIG" restore "$IMG"
  ) </dev/null >"$W/restore.log" 2>"$W/restore.err"
  rc=$?
  [ "$rc" != 0 ] || fail "procmig restore succeeded on a changed file"
  [ "$rc" != 124 ] || fail "procmig restore timed out"
  WANT="procmig restore: restore $IMG: cannot restore pid $OLD_PID here: $MAP: crc32c $AFTER here, $BEFORE at the source (bytes 0..$SIZE of the file)"
  GOT=$(tail -n 1 "$W/restore.err")
  [ "$GOT" = "$WANT" ] || fail "restore said: '$GOT'
                             want: '$WANT'"
  log "restore refused (exit $rc): $GOT"
  ! grep -q 'restored pid' "$W/restore.err" || fail "restore reported a restored process"
  sleep 0.5
  LEFT=$(pgrep -f -- "restore_probe --dir $W" || true)
  [ -z "$LEFT" ] || fail "processes of the program are running after the refusal: $LEFT"
  pass "restore of a checkpoint whose mapped file changed (size and mtime kept) refused with the exact reason, nothing left running; test $((SECONDS - T0)) s"
fi

# live
[ "$(id -u)" = 0 ] || skip "a private mount namespace for the receiver needs root"
command -v unshare >/dev/null || skip "unshare is missing"
OTHER="$W/probe.map.other"
cp "$MAP" "$OTHER" || fail "copy $MAP"
OTHER_STAMP=$(poke "$OTHER" $((2 * PAGE + 5)) "$MAP")
[ "$OTHER_STAMP" = "$STAMP" ] || fail "the copy's size/mtime '$OTHER_STAMP' differ from '$STAMP'"
OTHER_CRC=$(crc32c "$OTHER")
PORT=$($TOOL free-port)
(
  close_fds_above_2
  exec unshare -m --propagation private sh -c \
    'mount --bind "$1" "$2" && exec "$3" receive --listen "127.0.0.1:$4" --once --detach' \
    sh "$OTHER" "$MAP" "$PROCMIG" "$PORT"
) </dev/null >"$W/live.receive.log" 2>&1 &
RPID=$!
await_receiver live 127.0.0.1 "$PORT" "" "receiver (probe.map replaced in its mount namespace)"

run_migrate migrate "127.0.0.1:$PORT"
[ "$MIGRATE_RC" != 0 ] || fail "migrate succeeded although the receiver's file differs"
REASON="cannot restore pid $OLD_PID here: $MAP: crc32c $OTHER_CRC here, $BEFORE at the source (bytes 0..$SIZE of the file)"
grep -qF -- "the receiver refused the migration up front: restore: $REASON" "$W/migrate.err" ||
  fail "migrate's error does not name the receiver's reason: $(tail -n 3 "$W/migrate.err")"
log "migrate refused (exit $MIGRATE_RC): $(tail -n 1 "$W/migrate.err")"
wait_exit "$RPID" 15 || fail "receiver still running after refusing"
[ "$WAIT_STATUS" != 0 ] || fail "receiver exited 0 after refusing"
grep -qF -- "$REASON" "$W/live.receive.log" ||
  fail "the receiver's output does not name the reason: $(tail -n 3 "$W/live.receive.log")"
# Refused before any memory: no page was sent, only the preamble and the restore check.
for k in normal_pages zero_pages xbzrle_pages; do
  [ "$(stat_field migrate $k)" = 0 ] || fail "the sender sent $k=$(stat_field migrate $k) before the refusal"
done
SENT=$(stat_field migrate transferred_bytes)
[ -n "$SENT" ] && [ "$SENT" -lt 65536 ] || fail "the sender sent $SENT bytes before the refusal"
alive "$WPID" || fail "the source died after the refusal"
self_check_pid "$WPID" "$W/workload.log" "source after the refusal"
sleep 1
alive "$WPID" || fail "the source died a second after the refusal"
self_check_pid "$WPID" "$W/workload.log" "source 1 s after the refusal"
[ "$(stamp "$MAP")" = "$STAMP" ] || fail "the source's $MAP changed"
pass "live migration refused up front by the receiver (changed file, size and mtime kept); the source runs on and passes its self-check; test $((SECONDS - T0)) s"
