# Shared functions of the end-to-end tests (sourced, not run). Each test script:
#   source lib.sh; e2e_init NAME; require_commands run migrate receive inspect; ...
# Environment (set by CMake): PROCMIG (the procmig binary), EXAMPLES (the workloads' directory),
# E2E_WORK (a scratch root). Exit codes: 0 pass, 1 fail, 77 skipped with the reason printed.
# Everything a test starts is tracked and killed by pid in the EXIT trap; network namespaces and
# veths it creates are deleted there too. Logs stay in the work directory when a test fails.

set -u
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The system interpreter when there is one: a version-manager shim costs seconds per call.
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
TOOL="$PYTHON $E2E_DIR/e2e_tool.py"
E2E_PIDS=()
E2E_NETNS=()
E2E_LINKS=()
E2E_OK=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*"; }

skip() {
  echo "SKIP: $*"
  E2E_OK=1
  exit 77
}

fail() {
  echo "FAIL: $*"
  dump_logs
  exit 1
}

pass() {
  echo "PASS: $*"
  E2E_OK=1
  exit 0
}

dump_logs() {
  local f
  for f in "$W"/*.log "$W"/*.json "$W"/*.err; do
    [ -s "$f" ] || continue
    echo "----- $f (last 25 lines)"
    tail -n 25 "$f"
  done
}

e2e_cleanup() {
  local p ns l
  for p in "${E2E_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null
  done
  for p in "${E2E_PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  for l in "${E2E_LINKS[@]}"; do ip link del "$l" 2>/dev/null; done
  for ns in "${E2E_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ "$E2E_OK" = 1 ] && [ -z "${E2E_KEEP:-}" ]; then
    rm -rf "$W"
  else
    echo "work directory kept: $W"
  fi
}

e2e_init() {
  local name=$1
  [ -n "${PROCMIG:-}" ] || skip "PROCMIG is not set (run through ctest)"
  [ -n "${EXAMPLES:-}" ] || skip "EXAMPLES is not set (run through ctest)"
  command -v "$PYTHON" >/dev/null || skip "python3 is missing (the harness's stats and image checks)"
  mkdir -p "${E2E_WORK:-/tmp}"
  W=$(mktemp -d "${E2E_WORK:-/tmp}/$name.XXXXXX")
  trap e2e_cleanup EXIT
  trap 'fail "interrupted"' INT TERM
  log "work directory $W"
}

# A subcommand counts as built when `procmig CMD --help` exits 0.
require_commands() {
  local c
  [ -x "$PROCMIG" ] || skip "procmig not built yet ($PROCMIG)"
  for c in "$@"; do
    "$PROCMIG" "$c" --help >/dev/null 2>&1 || skip "procmig $c not built yet"
  done
}

require_root_netns() {
  [ "$(id -u)" = 0 ] || skip "network namespaces need root"
  command -v ip >/dev/null || skip "iproute2 (ip) is missing"
  command -v tc >/dev/null || skip "tc is missing"
}

track() { E2E_PIDS+=("$1"); }

# wait_for SECONDS CMD...: polls CMD every 50 ms.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  while ! "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.05
  done
}

alive() { kill -0 "$1" 2>/dev/null; }

# wait_exit PID SECONDS: 0 when it exited within the time; its status is in WAIT_STATUS.
wait_exit() {
  local pid=$1
  wait_for "$2" bash -c "! kill -0 $pid 2>/dev/null" || return 1
  wait "$pid"
  WAIT_STATUS=$?
  return 0
}

listening() {  # listening [NETNS] PORT
  if [ $# = 2 ]; then
    ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q .
  else
    ss -Hltn "sport = :$1" | grep -q .
  fi
}

# start_receiver TAG ADDR PORT [NETNS]: `procmig receive --once` into $W/TAG.store; sets RPID.
start_receiver() {
  local tag=$1 addr=$2 port=$3 ns=${4:-}
  local pre=()
  [ -n "$ns" ] && pre=(ip netns exec "$ns")
  mkdir -p "$W/$tag.store"
  "${pre[@]}" "$PROCMIG" receive --listen "$addr:$port" --store "$W/$tag.store" --once \
    >"$W/$tag.receive.log" 2>&1 &
  RPID=$!
  await_receiver "$tag" "$addr" "$port" "$ns" receiver
}

# await_receiver TAG ADDR PORT NETNS WHAT: tracks $RPID and waits until it listens.
await_receiver() {
  local tag=$1 addr=$2 port=$3 ns=$4 what=$5
  track "$RPID"
  if [ -n "$ns" ]; then
    wait_for 10 listening "$ns" "$port" || fail "receiver $tag never listened on $addr:$port"
  else
    wait_for 10 listening "$port" || fail "receiver $tag never listened on $addr:$port"
  fi
  log "$what $tag pid $RPID on $addr:$port"
}

# start_workload NAME ARGS...: `procmig run` with a private control socket; waits for READY and
# sets WPID and READY_LINE.
start_workload() {
  local name=$1
  shift
  require_workload_preload
  export PROCMIG_CONTROL="$W/$name.ctl"
  # Only stdin (/dev/null) and stdout/stderr (a log file): whatever else ctest or this shell
  # holds open (pipes) would be inherited, and the agent rightly refuses to migrate a process
  # holding a pipe to another process.
  (
    close_fds_above_2
    workload_preload
    exec "$PROCMIG" run --log "$W/agent.log" -- "$EXAMPLES/$name" "$@"
  ) </dev/null >"$W/workload.log" 2>&1 &
  WPID=$!
  track "$WPID"
  wait_for 30 grep -q '^READY' "$W/workload.log" ||
    fail "$name never printed READY (exit: $(alive $WPID && echo running || echo gone))"
  READY_LINE=$(grep -m1 '^READY' "$W/workload.log")
  wait_for 10 test -S "$PROCMIG_CONTROL" || fail "agent control socket $PROCMIG_CONTROL never appeared"
  log "workload $name pid $WPID: $READY_LINE"
}

ready_field() {  # ready_field KEY -> value from READY_LINE
  tr ' ' '\n' <<<"$READY_LINE" | sed -n "s/^$1=//p"
}

# run_migrate TAG TARGET [OPTIONS...]: foreground; MIGRATE_RC, stats in $W/TAG.json.
run_migrate() {
  local tag=$1 target=$2
  shift 2
  log "procmig migrate $WPID --to $target --json $*"
  timeout 150 "$PROCMIG" migrate "$WPID" --to "$target" --json "$@" \
    >"$W/$tag.json" 2>"$W/$tag.err"
  MIGRATE_RC=$?
  log "migrate exit $MIGRATE_RC: $($TOOL stats "$W/$tag.json")"
}

# start_migrate: the same in the background; sets MPID.
start_migrate() {
  local tag=$1 target=$2
  shift 2
  log "procmig migrate $WPID --to $target --json $* (background)"
  "$PROCMIG" migrate "$WPID" --to "$target" --json "$@" >"$W/$tag.json" 2>"$W/$tag.err" &
  MPID=$!
  track "$MPID"
}

stat_field() {  # stat_field TAG KEY
  $TOOL stats "$W/$1.json" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# expect_migrated TAG [--pattern]: migrate exited 0, the source exited 0, the receiver exited 0
# and stored an image with every digest ok, `procmig inspect` accepts it, stats show iterations.
expect_migrated() {
  local tag=$1 pattern=${2:-}
  [ "$MIGRATE_RC" = 0 ] ||
    fail "migrate ($tag) exited $MIGRATE_RC: $(tail -n 3 "$W/$tag.err"); source after it: $(source_state)"
  [ "$(stat_field "$tag" phase)" = done ] ||
    fail "migrate ($tag): last stats line is phase '$(stat_field "$tag" phase)', want done"
  local it
  it=$(stat_field "$tag" max_iteration)
  [ "${it:-0}" -ge 1 ] || fail "migrate ($tag): stats show no iteration"
  wait_exit "$WPID" 15 || fail "source pid $WPID still running 15 s after a successful migrate"
  [ "$WAIT_STATUS" = 0 ] || fail "source exited $WAIT_STATUS after migrate, want 0"
  wait_exit "$RPID" 30 || fail "receiver ($tag) still running 30 s after migrate"
  [ "$WAIT_STATUS" = 0 ] || fail "receiver ($tag) exited $WAIT_STATUS: $(tail -n 5 "$W/$tag.receive.log")"
  local args=()
  if [ "$pattern" = --pattern ]; then
    args=(--pattern "$(ready_field addr)" "$(ready_field bytes)" "$(ready_field page)")
  fi
  $TOOL image "$W/$tag.store" "${args[@]}" >"$W/$tag.image.log" 2>&1 ||
    fail "stored image ($tag): $(cat "$W/$tag.image.log")"
  log "$(cat "$W/$tag.image.log")"
  local img
  img=$(dirname "$(find "$W/$tag.store" -name MANIFEST | head -n 1)")
  "$PROCMIG" inspect "$img" >"$W/$tag.inspect.log" 2>&1 ||
    fail "procmig inspect $img exited $?: $(tail -n 5 "$W/$tag.inspect.log")"
  log "inspect: $(head -n 3 "$W/$tag.inspect.log" | tr '\n' ' ')"
}

# source_state: after a failed migration, says whether the source survived and self-checks
# (for the failure message; never fails itself).
source_state() {
  alive "$WPID" || { echo "exited"; return; }
  local before
  before=$(grep -c '^CHECK' "$W/workload.log")
  kill -USR2 "$WPID" 2>/dev/null
  if wait_for 20 bash -c "[ \$(grep -c '^CHECK' '$W/workload.log') -gt $before ]"; then
    echo "running, $(grep '^CHECK' "$W/workload.log" | tail -n 1)"
  else
    echo "running, no self-check answer within 20 s"
  fi
}

# self_check: SIGUSR2, then a new "CHECK PASS" line must appear.
self_check() {
  local before
  before=$(grep -c '^CHECK' "$W/workload.log")
  kill -USR2 "$WPID" || fail "source pid $WPID is gone"
  wait_for 20 bash -c "[ \$(grep -c '^CHECK' '$W/workload.log') -gt $before ]" ||
    fail "source printed no self-check within 20 s (alive: $(alive "$WPID" && echo yes || echo no))"
  local line
  line=$(grep '^CHECK' "$W/workload.log" | tail -n 1)
  [[ "$line" == "CHECK PASS"* ]] || fail "source self-check: $line"
  log "source self-check: $line"
}

# make_netns: a namespace with a veth pair to it, 10.213.X.1 (here) <-> 10.213.X.2 (there), the
# link shaped to RATE (default 100mbit) both ways. Sets NS, HERE_ADDR, THERE_ADDR.
make_netns() {
  local rate=${1:-100mbit}
  local x=$(($$ % 250 + 1)) tries=0
  # A subnet no interface here has already (a namespace left by a killed run, a test running
  # beside this one): two routes to one /30 send the connection to the wrong namespace.
  while ip -o addr show | grep -q " 10\.213\.$x\."; do
    x=$((x % 250 + 1))
    tries=$((tries + 1))
    [ "$tries" -lt 250 ] || fail "no free 10.213.X.0/30 subnet for a test namespace"
  done
  NS="pm-e2e-$$"
  local a="pme$$a" b="pme$$b"
  ip netns add "$NS" || fail "ip netns add $NS"
  E2E_NETNS+=("$NS")
  ip link add "$a" type veth peer name "$b" || fail "ip link add veth $a/$b"
  E2E_LINKS+=("$a")
  ip link set "$b" netns "$NS" || fail "move $b into $NS"
  HERE_ADDR=10.213.$x.1
  THERE_ADDR=10.213.$x.2
  ip addr add "$HERE_ADDR/30" dev "$a" && ip link set "$a" up || fail "configure $a"
  ip -n "$NS" addr add "$THERE_ADDR/30" dev "$b" && ip -n "$NS" link set "$b" up &&
    ip -n "$NS" link set lo up || fail "configure $b in $NS"
  # netem where the kernel has it (delay and rate), else a token bucket (rate only).
  if tc qdisc add dev "$a" root netem delay 1ms rate "$rate" 2>/dev/null; then
    tc -n "$NS" qdisc add dev "$b" root netem delay 1ms rate "$rate" 2>/dev/null
    SHAPER="netem delay 1ms rate $rate"
  else
    tc qdisc add dev "$a" root tbf rate "$rate" burst 64kb latency 100ms ||
      fail "neither netem nor tbf could shape $a"
    tc -n "$NS" qdisc add dev "$b" root tbf rate "$rate" burst 64kb latency 100ms ||
      fail "tbf in $NS"
    SHAPER="tbf rate $rate (no sch_netem in this kernel)"
  fi
  log "netns $NS: $HERE_ADDR <-> $THERE_ADDR over veth, $SHAPER"
}

# ---- Restore helpers (e2e_restore_*.sh) ----

# close_fds_above_2: closes every descriptor above 2 of the calling (sub)shell, so a process it
# execs holds no pipe of ctest's or of the test's FIFOs (the agent refuses pipes above fd 2).
close_fds_above_2() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] && eval "exec $fd>&-"
  done
  return 0
}

# WORKLOAD_PRELOAD (a library path): the workload runs with it in LD_PRELOAD, after the agent
# (`procmig run` puts the agent first), as a program whose malloc is jemalloc or tcmalloc.
# Called in the workload's subshell, after require_workload_preload in the test's shell.
workload_preload() {
  [ -n "${WORKLOAD_PRELOAD:-}" ] || return 0
  export LD_PRELOAD=$WORKLOAD_PRELOAD
}

# require_workload_preload: skips the test when WORKLOAD_PRELOAD names a missing library.
require_workload_preload() {
  [ -z "${WORKLOAD_PRELOAD:-}" ] || [ -r "$WORKLOAD_PRELOAD" ] ||
    skip "$WORKLOAD_PRELOAD is missing (scripts/setup.sh installs it)"
}

# check_preload PID WHAT: with WORKLOAD_PRELOAD, PID must map that library, and the agent's log
# must say the program's malloc comes from it (what the agent forwards the program's threads to).
check_preload() {
  [ -n "${WORKLOAD_PRELOAD:-}" ] || return 0
  local file
  file=$(readlink -f "$WORKLOAD_PRELOAD")
  grep -q " $file\$" "/proc/$1/maps" 2>/dev/null || fail "$2 (pid $1) does not map $file"
  grep -q "the program's malloc from $WORKLOAD_PRELOAD)" "$W/agent.log" ||
    fail "the agent's log does not name $WORKLOAD_PRELOAD as the program's malloc: $(grep -m1 "program's malloc" "$W/agent.log")"
}

# start_workload_io STDIN OUT NAME ARGS...: start_workload with stdin from STDIN (a file, or a
# FIFO the test holds open for writing) instead of /dev/null. OUT is `file` (stdout/stderr to
# $W/workload.log, a regular file: a restore reopens it at its offset) or `pipe` (to a `cat`
# writing $W/workload.log: a restore connects a stdio pipe to the restorer's own stdout).
# Sets WPID and READY_LINE.
start_workload_io() {
  local in=$1 out=$2 name=$3
  shift 3
  require_workload_preload
  export PROCMIG_CONTROL="$W/$name.ctl"
  if [ "$out" = pipe ]; then
    # A named FIFO read by a `cat` of this shell (a process substitution on the workload's own
    # redirection would make that cat the workload's child, which the agent refuses).
    rm -f "$W/workload.fifo"
    mkfifo "$W/workload.fifo" || fail "mkfifo $W/workload.fifo"
    (
      close_fds_above_2
      exec cat "$W/workload.fifo" >"$W/workload.log"
    ) </dev/null &
    track $!
    (
      close_fds_above_2
      workload_preload
      exec "$PROCMIG" run --log "$W/agent.log" -- "$EXAMPLES/$name" "$@"
    ) <"$in" >"$W/workload.fifo" 2>&1 &
  else
    (
      close_fds_above_2
      workload_preload
      exec "$PROCMIG" run --log "$W/agent.log" -- "$EXAMPLES/$name" "$@"
    ) <"$in" >"$W/workload.log" 2>&1 &
  fi
  WPID=$!
  track "$WPID"
  wait_for 30 grep -q '^READY' "$W/workload.log" ||
    fail "$name never printed READY (exit: $(alive $WPID && echo running || echo gone))"
  READY_LINE=$(grep -m1 '^READY' "$W/workload.log")
  wait_for 10 test -S "$PROCMIG_CONTROL" || fail "agent control socket $PROCMIG_CONTROL never appeared"
  log "workload $name pid $WPID: $READY_LINE"
}

# start_live_receiver TAG ADDR PORT [NETNS [STDIN]]: `procmig receive --once --detach` without
# --store: restores the migrated process live and exits after the ack. Descriptors above 2
# closed (the restored process must not inherit the test's), stdin from STDIN (default
# /dev/null: what a restored stdio pipe is connected to), output in $W/TAG.receive.log; extra
# receive options in RECEIVE_ARGS (e.g. --no-pid-ns). Sets RPID.
start_live_receiver() {
  local tag=$1 addr=$2 port=$3 ns=${4:-} in=${5:-/dev/null}
  local pre=()
  [ -n "$ns" ] && pre=(ip netns exec "$ns")
  (
    close_fds_above_2
    exec "${pre[@]}" "$PROCMIG" receive --listen "$addr:$port" --once --detach ${RECEIVE_ARGS:-}
  ) <"$in" >"$W/$tag.receive.log" 2>&1 &
  RPID=$!
  await_receiver "$tag" "$addr" "$port" "$ns" "live receiver"
}

# track_restored HOST_PID: tracks a restored process and, when it runs under a PID-namespace
# init (its parent), that init too, so the EXIT trap kills both.
track_restored() {
  local ppid
  track "$1"
  ppid=$(awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  [ -n "$ppid" ] && [ "$ppid" -gt 1 ] && [ "$ppid" != $$ ] && track "$ppid"
  return 0
}

# restored_from_log FILE: parses the "restored pid N (host pid H, ...), T thread(s), in X ms"
# line; sets RESTORED_PID (H), RESTORED_NSPID (N), RESTORED_THREADS, RESTORE_MS, PAUSE_MS
# ("" when not printed). Fails when there is no such line.
restored_from_log() {
  local line
  line=$(grep -m1 'restored pid' "$1") || fail "no 'restored pid' line in $1: $(tail -n 5 "$1")"
  RESTORED_NSPID=$(sed -n 's/.*restored pid \([0-9]*\) .*/\1/p' <<<"$line")
  RESTORED_PID=$(sed -n 's/.*(host pid \([0-9-]*\),.*/\1/p' <<<"$line")
  RESTORED_THREADS=$(sed -n 's/.*), \([0-9]*\) thread.*/\1/p' <<<"$line")
  RESTORE_MS=$(sed -n 's/.* thread(s), in \([0-9.]*\) ms.*/\1/p' <<<"$line")
  PAUSE_MS=$(sed -n 's/.*program paused \([0-9.]*\) ms.*/\1/p' <<<"$line")
  [ -n "$RESTORED_PID" ] && [ "$RESTORED_PID" -gt 0 ] ||
    fail "restored process has no host pid: $line"
  track_restored "$RESTORED_PID"
}

# self_check_pid PID LOG WHO: SIGUSR2 to PID, then a new "CHECK PASS" line must appear in LOG.
# Sets CHECK_LINE.
self_check_pid() {
  local pid=$1 file=$2 who=$3 before
  before=$(grep -c '^CHECK' "$file")
  kill -USR2 "$pid" || fail "$who pid $pid is gone"
  wait_for 20 bash -c "[ \$(grep -c '^CHECK' '$file') -gt $before ]" ||
    fail "$who printed no self-check within 20 s (alive: $(alive "$pid" && echo yes || echo no))"
  CHECK_LINE=$(grep '^CHECK' "$file" | tail -n 1)
  [[ "$CHECK_LINE" == "CHECK PASS"* ]] || fail "$who self-check: $CHECK_LINE"
  log "$who self-check: $CHECK_LINE"
}

check_field() {  # check_field KEY -> value from CHECK_LINE
  tr ' ' '\n' <<<"$CHECK_LINE" | sed -n "s/^$1=//p"
}

# maps_diff BEFORE AFTER: the lines of two /proc/PID/maps copies that differ in range, perms,
# offset or path (device and inode ignored: a restored anonymous or file mapping may show other
# numbers), one "- line" / "+ line" each; empty when the layouts are the same.
maps_diff() {
  diff <(awk '{print $1, $2, $3, $6}' "$1") <(awk '{print $1, $2, $3, $6}' "$2") |
    sed -n 's/^</-/p; s/^>/+/p'
}

# maps_lost_files BEFORE AFTER: the file-backed VMAs of BEFORE ("range perms path", path
# absolute) some page of which AFTER does not map from the same file, offset and permissions: the
# mappings a restore brought back without their file identity (e.g. as anonymous memory). Two
# neighbours the kernel merged into one VMA count as kept. One line each.
maps_lost_files() {
  awk '$6 ~ /^\// {print $1, $2, $6}' "$1" | sort >"$1.files"
  awk '$6 ~ /^\// {print $1, $2, $6}' "$2" | sort >"$2.files"
  $TOOL maps-lost "$1" "$2"
}
