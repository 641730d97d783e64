#!/usr/bin/env bash
# Runs the dirty-tracker tests inside a VM booted with Debian 12's stock kernel (Linux 6.1, which
# has CONFIG_MEM_SOFT_DIRTY=y but neither PAGEMAP_SCAN nor UFFD_FEATURE_WP_ASYNC), where the
# soft-dirty backend can be proven. Uses tests/vm/run_in_vm.sh (qemu, KVM when it works, TCG
# otherwise).
#
#   tests/unit/dirty/run_soft_dirty_vm.sh [BUILD_DIR]     (default: build)
#
# Inside the guest: the probe test must pick soft-dirty automatically
# (PROCMIG_EXPECT_AUTO_TRACKER=soft-dirty), the soft-dirty tracker test must pass, pagemap-scan
# must skip (77: no PAGEMAP_SCAN on 6.1), and uffd-wp, mprotect and full must pass.
# Exit status: 0 when all of that held, 1 otherwise, or run_in_vm.sh's own code (124 timeout,
# 125 guest crash, 126 setup failure).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
bins=$build/tests/unit/dirty
tests=(dirty_tracker_probe_test dirty_soft_dirty_tracker_test dirty_pagemap_scan_tracker_test
  dirty_uffd_wp_tracker_test dirty_mprotect_tracker_test dirty_full_tracker_test)
files=()
for t in "${tests[@]}"; do
  [ -x "$bins/$t" ] || { echo "run_soft_dirty_vm: $bins/$t missing: build it first" >&2; exit 126; }
  files+=(--file "$bins/$t")
done

work=$(mktemp -d "${TMPDIR:-/tmp}/procmig-dirty-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
guest=$work/dirty_vm_suite.sh
# Runs in the guest under busybox sh. Expected exit code of each binary: 0 pass, 77 skip.
cat >"$guest" <<GUEST
#!/bin/sh
fail=0
run() {
  want=\$1; shift
  echo "=== \$*"
  "\$@"
  code=\$?
  case " \$want " in
    *" \$code "*) echo "=== \$1: exit \$code (ok)" ;;
    *) echo "=== \$1: exit \$code, expected \$want: FAIL"; fail=1 ;;
  esac
}
export PROCMIG_EXPECT_AUTO_TRACKER=soft-dirty
run "0" $bins/dirty_tracker_probe_test
run "0" $bins/dirty_soft_dirty_tracker_test
run "77" $bins/dirty_pagemap_scan_tracker_test
run "0" $bins/dirty_uffd_wp_tracker_test
run "0" $bins/dirty_mprotect_tracker_test
run "0" $bins/dirty_full_tracker_test
if [ \$fail = 0 ]; then echo "DIRTY-VM-SUITE: PASS"; else echo "DIRTY-VM-SUITE: FAIL"; fi
exit \$fail
GUEST
chmod 755 "$guest"
start=$SECONDS
code=0
"$repo/tests/vm/run_in_vm.sh" --timeout "${PROCMIG_VM_TIMEOUT:-900}" --cpus 2 --mem 1024 \
  "${files[@]}" "$guest" || code=$?
echo "run_soft_dirty_vm: guest suite exited $code after $((SECONDS - start)) s" >&2
exit $code
