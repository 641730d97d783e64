// procmig's public API: what this kernel and machine offer for migration (`procmig check`).
//
// This header and the others under lib/include/procmig/ are all that preload/, agent/ and
// examples/ include. Everything here is safe to call from any thread and keeps no state.
#ifndef PROCMIG_CHECK_H_
#define PROCMIG_CHECK_H_

#include <string>

#include "absl/status/statusor.h"

namespace procmig {

enum class CheckFormat { kTable, kJson };

// Probes every feature procmig may use (userfaultfd and its feature bits, PAGEMAP_SCAN,
// soft-dirty by behaviour, io_uring and its opcodes, clone3 set_tid, capabilities, ...) and every
// dirty-tracking backend, and renders one line per item: available or not, and why. The probes
// leave nothing behind (fds closed, mappings unmapped, children reaped).
absl::StatusOr<std::string> RunCheck(CheckFormat format);

}  // namespace procmig

#endif  // PROCMIG_CHECK_H_
