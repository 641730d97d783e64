#!/usr/bin/env bash
# Runs one program inside a throwaway qemu VM booted with Debian 12's stock kernel (Linux 6.1,
# CONFIG_MEM_SOFT_DIRTY=y), and exits with that program's exit code.
#
#   tests/vm/run_in_vm.sh [--timeout SECONDS] [--mem MB] [--cpus N] [--file PATH]... [--log FILE] BINARY [ARGS...]
#
# Why: the build host's kernel lacks soft-dirty (and any other kernel may lack some feature a
# procmig tracker or restorer depends on), so kernel-behaviour tests run here under another
# kernel. The guest is an initramfs holding busybox (all applets in /bin), BINARY at its host
# path, every shared library `ldd` lists and the dynamic loader (at their host paths), and each
# --file PATH (file or directory, at its host path, with its libraries). proc, sysfs, devtmpfs,
# devpts, a tmpfs /tmp and /dev/shm are mounted, loopback is up, /etc has passwd, group and
# hosts. BINARY runs as root in /tmp with ARGS unchanged. The guest's console (BINARY's stdout
# and stderr, kernel warnings) is streamed to stdout and saved to the log file (default
# ${TMPDIR:-/tmp}/procmig-vm.<binary name>.log). --timeout (default 300) bounds the VM's run,
# not the preparation; --mem defaults to 512, --cpus to 1 (TCG with more vCPUs takes more host
# cores). The guest CPU is "-cpu max": SSE4.2, PCLMUL, AVX2, BMI2, but no AVX-512.
#
# Exit status: the guest program's exit code (128+N if signal N killed it); 124 when the
# timeout expired (qemu killed); 125 when the VM ended without reporting an exit code (kernel
# panic, guest crash, qemu error); 126 when the VM could not be prepared (packages, kernel,
# binary, initramfs).
#
# Environment: PROCMIG_VM_CACHE (default /var/cache/procmig-vm) keeps the extracted kernel so
# later runs skip the download; PROCMIG_VM_ACCEL=auto|tcg|kvm (default auto: KVM only if
# /dev/kvm exists and the guest starts within PROCMIG_VM_KVM_BOOT_TIMEOUT seconds, default 20;
# otherwise TCG, since KVM was seen to hang at boot in this nested VM).
set -euo pipefail

readonly kMarker=PROCMIG-VM-EXIT
readonly kStartMarker=PROCMIG-VM-START
readonly kSetupFailed=126

timeout_s=300
mem_mb=512
cpus=1
log_file=""
extra_files=()
cache_dir=${PROCMIG_VM_CACHE:-/var/cache/procmig-vm}
accel=${PROCMIG_VM_ACCEL:-auto}
kvm_boot_timeout=${PROCMIG_VM_KVM_BOOT_TIMEOUT:-20}

say() { echo "run_in_vm: $*" >&2; }
die() {
  say "error: $*"
  exit "$kSetupFailed"
}
usage() {
  sed -n 's/^#   \(tests\/vm\/run_in_vm.sh .*\)/usage: \1/p' "$0" >&2
  exit "$kSetupFailed"
}

while [ $# -gt 0 ]; do
  case $1 in
    --timeout) timeout_s=${2:?--timeout needs SECONDS}; shift 2 ;;
    --mem) mem_mb=${2:?--mem needs MB}; shift 2 ;;
    --cpus) cpus=${2:?--cpus needs N}; shift 2 ;;
    --log) log_file=${2:?--log needs FILE}; shift 2 ;;
    --file)
      [ -e "${2:?--file needs PATH}" ] || die "--file $2: no such file or directory"
      extra_files+=("$(readlink -f "$2")"); shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) say "unknown option $1"; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
for n in "$timeout_s" "$mem_mb" "$cpus" "$kvm_boot_timeout"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "options: '$n' is not a positive integer"
done
case $accel in
  auto | tcg | kvm) ;;
  *) die "PROCMIG_VM_ACCEL='$accel': expected auto, tcg or kvm" ;;
esac

binary=$1
shift
[ -f "$binary" ] && [ -x "$binary" ] || die "binary '$binary': not an executable file"
binary=$(readlink -f "$binary")
binary_name=$(basename "$binary")
[ -n "$log_file" ] || log_file="${TMPDIR:-/tmp}/procmig-vm.$binary_name.log"

work=$(mktemp -d "${TMPDIR:-/tmp}/procmig-vm.XXXXXX")
qemu_pid=""
tail_pid=""
kernel_dl=""
cleanup() {
  [ -z "$qemu_pid" ] || kill -KILL "$qemu_pid" 2>/dev/null || true
  [ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null || true
  [ -z "$kernel_dl" ] || rm -rf "$kernel_dl"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'say "interrupted: VM killed"; exit 130' INT TERM

# --- Host packages -----------------------------------------------------------------------------

run_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# A stale package index is the usual reason apt cannot find a package; refresh it once per run.
apt_updated=0
apt_update_once() {
  [ $apt_updated = 0 ] || return 1
  apt_updated=1
  say "running apt-get update once and retrying"
  run_as_root apt-get update -qq >&2 || die "apt-get update failed"
}

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  say "installing ${missing[*]}"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
    --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}")
  if ! run_as_root "${install[@]}" >&2; then
    apt_update_once || die "apt-get install ${missing[*]} failed"
    run_as_root "${install[@]}" >&2 || die "apt-get install ${missing[*]} failed"
  fi
}

ensure_packages qemu-system-x86 busybox-static
busybox=/bin/busybox
# The guest has no libc of its own for busybox: it must be the static build.
! ldd "$busybox" >/dev/null 2>&1 || die "$busybox is dynamically linked (want busybox-static)"

# --- Kernel ------------------------------------------------------------------------------------

# Prints the name of the newest Debian 6.1 kernel image package, e.g. linux-image-6.1.0-56-amd64.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ && !n++ { print $2 }' || true
}

# Fetches and extracts the kernel package into $cache_dir/<package>/ unless already there.
# Only boot/ (vmlinuz, config, System.map) is kept: the guest loads no modules. Returns 1 when
# apt-get download fails (stale package index, mirror unreachable).
fetch_kernel() {
  local pkg=$1 dest=$cache_dir/$1
  [ -f "$dest/.complete" ] && return 0
  kernel_dl=$cache_dir/.download.$$
  rm -rf "$kernel_dl" && mkdir -p "$kernel_dl"
  [ "$(id -u)" != 0 ] || chown _apt "$kernel_dl" 2>/dev/null || true # lets apt download sandboxed
  say "downloading $pkg (not installed; extracted into $dest)"
  (cd "$kernel_dl" && apt-get download -q "$pkg" >&2) || return 1
  local deb
  deb=$(ls "$kernel_dl"/"$pkg"_*.deb) || die "apt-get download $pkg left no .deb"
  mkdir -p "$kernel_dl/x"
  dpkg-deb -x "$deb" "$kernel_dl/x" || die "dpkg-deb -x $deb failed"
  rm -rf "$dest" && mkdir -p "$dest"
  mv "$kernel_dl/x/boot" "$dest/boot" || die "$deb has no boot/ directory"
  rm -rf "$kernel_dl"
  kernel_dl=""
  touch "$dest/.complete"
}

mkdir -p "$cache_dir" || die "cannot create cache directory $cache_dir"
exec 9>"$cache_dir/.lock"
flock 9 # Concurrent runs must not extract into the same directory.
pkg=$(kernel_package)
if [ -z "$pkg" ] || ! fetch_kernel "$pkg"; then
  if apt_update_once; then
    pkg=$(kernel_package)
    [ -z "$pkg" ] || fetch_kernel "$pkg" || say "apt-get download $pkg failed"
  fi
fi
if [ -z "$pkg" ] || [ ! -f "$cache_dir/$pkg/.complete" ]; then
  # No package index answer (offline?): use the newest kernel already cached, if any.
  pkg=$(cd "$cache_dir" && ls -d linux-image-*-amd64 2>/dev/null | sort -V | tail -n1) || true
  [ -n "$pkg" ] && [ -f "$cache_dir/$pkg/.complete" ] ||
    die "no Debian kernel package could be downloaded and none is cached in $cache_dir"
  say "could not fetch the kernel package apt names; using cached $pkg"
fi
flock -u 9
kernel=$(compgen -G "$cache_dir/$pkg/boot/vmlinuz-*" | sort -V | tail -n1 || true)
config=$(compgen -G "$cache_dir/$pkg/boot/config-*" | sort -V | tail -n1 || true)
[ -n "$kernel" ] && [ -n "$config" ] || die "$cache_dir/$pkg/boot lacks vmlinuz-* or config-*"
soft_dirty=$(grep -E '^(# )?CONFIG_MEM_SOFT_DIRTY[= ]' "$config" || true)
say "kernel $kernel ($(basename "$config"): ${soft_dirty:-CONFIG_MEM_SOFT_DIRTY absent})"
[ "$soft_dirty" = CONFIG_MEM_SOFT_DIRTY=y ] || die "$config: kernel lacks CONFIG_MEM_SOFT_DIRTY=y"

# --- Initramfs ---------------------------------------------------------------------------------

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
[ "$(id -u)" != 0 ] || mknod -m 600 "$root/dev/console" c 5 1
mkdir -p "$root/etc"
echo "root:x:0:0:root:/tmp:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
printf '127.0.0.1 localhost procmig-vm\n::1 localhost\n' >"$root/etc/hosts"

# Copies every library ldd lists for `path` (a host file) plus the dynamic loader into the guest
# at their host paths: the guest's loader then resolves exactly what the host's did, RUNPATH and
# $ORIGIN included. Static binaries, scripts and data files need nothing.
copy_libraries() {
  local path=$1 ldd_out lib
  if ldd_out=$(ldd "$path" 2>&1); then
    if printf '%s\n' "$ldd_out" | grep -q 'not found'; then
      die "ldd $path: $(printf '%s\n' "$ldd_out" | grep 'not found' | tr -s ' \t' ' ')"
    fi
    while read -r lib; do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -pL "$lib" "$root$lib"
    done < <(printf '%s\n' "$ldd_out" |
      awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  elif ! printf '%s\n' "$ldd_out" | grep -qE 'not a dynamic executable|statically linked'; then
    die "ldd $path failed: $ldd_out"
  fi
}

# Copies a host file or directory tree into the guest at the same absolute path, with the
# libraries of the file (or of each executable and shared object in the tree).
add_to_guest() {
  local path=$1 file
  case $path in
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /init | /bin | /bin/busybox)
      die "$path: cannot be placed in the guest (the guest's own files live there)" ;;
  esac
  if [ -d "$path" ]; then # merged into what is already there (say, the binary's own folder)
    mkdir -p "$root$path"
    cp -a "$path/." "$root$path/"
    while IFS= read -r -d '' file; do
      copy_libraries "$file"
    done < <(find "$path" -type f \( -perm /111 -o -name '*.so' -o -name '*.so.*' \) -print0)
    return 0
  fi
  [ -f "$root$path" ] && [ ! -L "$root$path" ] && return 0 # already copied
  mkdir -p "$root$(dirname "$path")"
  cp -pL --remove-destination "$path" "$root$path"
  copy_libraries "$path"
}

add_to_guest "$binary"
for f in "${extra_files[@]}"; do
  add_to_guest "$f"
done

# Single-quotes a word for the guest's shell, so any byte survives unchanged.
quote() {
  local q=${1//\'/\'\\\'\'}
  printf "'%s'" "$q"
}
guest_command=$(quote "$binary")
for arg in "$@"; do
  guest_command+=" $(quote "$arg")"
done

cat >"$root/init" <<INIT
#!/bin/busybox sh
export PATH=/bin HOME=/tmp TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts
ip link set lo up # tests talk over 127.0.0.1
hostname procmig-vm
# Files packed under /tmp (the binary may live there) move onto the fresh tmpfs.
mv /tmp /tmp.initramfs
mkdir /tmp
mount -t tmpfs tmpfs /tmp
cp -a /tmp.initramfs/. /tmp/ && rm -rf /tmp.initramfs
cd /tmp
echo "$kStartMarker \$(uname -r)"
$guest_command
code=\$?
echo
echo "$kMarker \$code"
poweroff -f
INIT
chmod 755 "$root/init"

initrd=$work/initrd.gz
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$initrd") ||
  die "packing the initramfs failed"
shared_objects=$(find "$root" -name '*.so*' | wc -l)
say "initramfs $(du -h "$initrd" | cut -f1) (binary $binary_name, $shared_objects shared objects)"

# --- Boot --------------------------------------------------------------------------------------

# Boots the VM once with the given accelerator, streaming its console to stdout and appending it
# to the log. Returns 0 when qemu exited by itself, 124 on timeout, 3 when boot_limit (0: none)
# passed without the guest's start marker.
boot() {
  local accel=$1 boot_limit=$2 part=$work/console.$1
  local cpu=max
  [ "$accel" != kvm ] || cpu=host,arch-capabilities=off # plain "host" makes QEMU abort on an MSR
  : >"$part"
  qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp "$cpus" -m "$mem_mb" \
    -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet" \
    -nographic -vga none -nic none -no-reboot </dev/null >"$part" 2>&1 &
  qemu_pid=$!
  # SeaBIOS resets and clears the terminal (ESC c, ESC [2J): strip escapes and CRs, line-buffered.
  tail -s 0.2 -n +1 -f --pid="$qemu_pid" "$part" |
    sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee -a "$log_file" &
  tail_pid=$!
  local start=$SECONDS result=0
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
      result=124
    elif [ "$boot_limit" -gt 0 ] && [ $((SECONDS - start)) -ge "$boot_limit" ] &&
      ! grep -q "$kStartMarker" "$part"; then
      result=3
    fi
    if [ $result != 0 ]; then
      kill -TERM "$qemu_pid" 2>/dev/null || true
      local i
      for ((i = 0; i < 10; i++)); do # up to 2 s for qemu to exit on SIGTERM
        kill -0 "$qemu_pid" 2>/dev/null || break
        sleep 0.2
      done
      kill -KILL "$qemu_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
  wait "$tail_pid" 2>/dev/null || true
  tail_pid=""
  return $result
}

: >"$log_file"
result=0
if [ "$accel" = kvm ] || { [ "$accel" = auto ] && [ -e /dev/kvm ]; }; then
  say "booting with KVM (falls back to TCG unless the guest starts within ${kvm_boot_timeout}s)"
  boot kvm "$kvm_boot_timeout" || result=$?
  # A guest that started and then timed out or crashed is the program's result, not KVM's.
  if [ $result != 124 ] && ! grep -q "$kStartMarker" "$work/console.kvm"; then
    say "KVM guest did not start; booting with TCG"
    echo "--- run_in_vm: KVM attempt failed, TCG follows ---" >>"$log_file"
    accel=tcg
    result=0
  else
    accel=kvm
  fi
fi
if [ "$accel" != kvm ]; then
  say "booting with TCG: $guest_command (timeout ${timeout_s}s, ${mem_mb} MiB, log $log_file)"
  boot tcg 0 || result=$?
fi

if [ $result = 124 ]; then
  say "timeout: the VM was still running after ${timeout_s}s and was killed (log $log_file)"
  exit 124
fi
code=$(sed -n "s/.*$kMarker \([0-9][0-9]*\)\$/\1/p" "$log_file" | tail -n1 || true)
if [ -z "$code" ]; then
  say "no '$kMarker' line: the VM ended before the program reported its exit code" \
    "(kernel panic, guest crash or qemu error; see $log_file)"
  exit 125
fi
say "guest $binary_name exited with $code (log $log_file)"
exit "$code"
