#!/usr/bin/env bash
# e2e_refuse.sh shared-memory|deleted-file|socket-midway
#
# A real program (python3) holding what cannot migrate yet is refused before anything is frozen,
# with a message naming the resource, and runs on unharmed:
#   shared-memory  mmap.mmap(-1, n): MAP_SHARED|MAP_ANONYMOUS memory, which no file holds (it
#                  would come back empty: only private memory becomes RAM blocks);
#   deleted-file   tempfile.TemporaryFile(): an unlinked file, with no path to reopen it by;
#   socket-midway  socket.socket(), opened by the program's SIGUSR2 handler while the migration
#                  (48 MiB at 16 MB/s) is under way: fine at setup, refused at the capture before
#                  the stop, with the program still running.
# The program fills its resource at start, then waits for its stdin to close; at the end it
# checks the content is intact and prints "intact" or "LOST". Checks: `procmig migrate` exits
# non-zero with the expected message on stderr, before connecting (the receiver, `receive --once
# --store`, stored nothing and still listens; socket-midway: stored nothing), and the program,
# its stdin closed after the refusal, prints "intact" and exits 0.
source "$(dirname "$0")/lib.sh"
CASE=$1
e2e_init "refuse-$CASE"
require_commands run migrate receive
T0=$SECONDS
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is missing"

case "$CASE" in
  shared-memory)
    WANT='shared memory 0x[0-9a-f]*-0x[0-9a-f]* (/dev/zero, deleted): only private memory and shared mappings of existing files migrate'
    ;;
  deleted-file)
    WANT='fd [0-9]*: /.* (deleted): a deleted file cannot be opened again at the destination'
    ;;
  socket-midway)
    WANT='fd [0-9]*: socket (socket:\[[0-9]*\])'
    ;;
  *) fail "unknown case $CASE" ;;
esac

cat >"$W/prog.py" <<'EOF'
import mmap, os, signal, socket, sys, tempfile
DATA = b"procmig!" * (1 << 17)
if sys.argv[1] == "socket-midway":
    m = bytearray(os.urandom(48 << 20))  # what the migration takes a few seconds to send
    DATA = bytes(m)
    sockets = []
    def open_socket(signum, frame):
        sockets.append(socket.socket())
        print("socket", flush=True)
    signal.signal(signal.SIGUSR2, open_socket)
elif sys.argv[1] == "shared-memory":
    m = mmap.mmap(-1, len(DATA))  # MAP_SHARED | MAP_ANONYMOUS
    m[:] = DATA
else:
    f = tempfile.TemporaryFile()  # unlinked (O_TMPFILE where the kernel has it)
    f.write(DATA)
    f.flush()
print("ready", flush=True)
sys.stdin.read()  # until the harness closes it
if sys.argv[1] in ("shared-memory", "socket-midway"):
    ok = m[:] == DATA
else:
    f.seek(0)
    ok = f.read() == DATA
print("intact" if ok else "LOST", flush=True)
EOF

PORT=$($TOOL free-port)
start_receiver dst 127.0.0.1 "$PORT"

mkfifo "$W/stdin"
export PROCMIG_CONTROL="$W/prog.ctl"
(
  close_fds_above_2
  exec "$PROCMIG" run --log "$W/agent.log" -- /usr/bin/python3 "$W/prog.py" "$CASE"
) <"$W/stdin" >"$W/prog.out" 2>"$W/prog.err" &
WPID=$!
track "$WPID"
exec 7>"$W/stdin"  # the program's stdin stays open until the end
wait_for 20 grep -q ready "$W/prog.out" || fail "the program never got ready: $(cat "$W/prog.err")"

STEP=setup
if [ "$CASE" = socket-midway ]; then
  STEP=stop-and-copy
  start_migrate dst "127.0.0.1:$PORT" --max-bandwidth 16M
  wait_for 20 grep -q '"phase": "bulk"' "$W/dst.json" || fail "the migration never reached bulk"
  kill -USR2 "$WPID"
  wait_for 10 grep -q socket "$W/prog.out" || fail "the program never opened its socket"
  wait_exit "$MPID" 60 || fail "migrate did not end 60 s after the socket was opened"
  MIGRATE_RC=$WAIT_STATUS
  ! grep -q '"phase": "done"' "$W/dst.json" || fail "the migration ended done"
else
  run_migrate dst "127.0.0.1:$PORT"
fi
[ "$MIGRATE_RC" != 0 ] || fail "migrate of a program holding $CASE exited 0"
grep -q "$STEP: the process holds what cannot be migrated yet: .*$WANT" "$W/dst.err" ||
  fail "migrate's error does not name the $CASE: $(tail -n 2 "$W/dst.err")"
log "refused: $(tail -n 1 "$W/dst.err")"
alive "$WPID" || fail "the program died after the refusal"
if [ "$CASE" = socket-midway ]; then
  # The session failed: the receiver keeps nothing of it.
  wait_for 10 sh -c "[ -z \"\$(ls -A '$W/dst.store')\" ]" ||
    fail "the receiver kept something: $(ls -A "$W/dst.store")"
else
  [ -z "$(ls -A "$W/dst.store")" ] || fail "the receiver stored something: $(ls -A "$W/dst.store")"
  # Refused before connecting: the receiver (--once) saw no session and still waits for one.
  alive "$RPID" || fail "the receiver exited: $(tail -n 2 "$W/dst.receive.log")"
  listening "$PORT" || fail "the receiver stopped listening"
fi

exec 7>&-  # end of stdin: the program checks its resource and exits
wait_exit "$WPID" 20 || fail "the program did not exit 20 s after its stdin closed"
[ "$WAIT_STATUS" = 0 ] || fail "the program exited $WAIT_STATUS: $(tail -n 3 "$W/prog.err")"
[ "$(tail -n 1 "$W/prog.out")" = intact ] ||
  fail "the program's $CASE was not intact after the refusal: $(tail -n 1 "$W/prog.out")"
pass "migrate refused the $CASE with a message naming it; the program ran on, its content intact; test $((SECONDS - T0)) s"
