// A hostile restore_check payload (the first record of a live migration, decoded by the receiver
// before any memory arrives): decoding must reject it cleanly or yield a record that re-encodes
// to the same bytes (never a crash, never an allocation the input could not describe).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "migration/restore_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace procmig;
  absl::StatusOr<RestoreCheckRecord> r = DecodeRestoreCheck({data, size});
  if (!r.ok()) return 0;
  std::string again;
  if (!EncodeRestoreCheck(*r, &again).ok() || again.size() != size ||
      EncodedSize(*r) != size || std::memcmp(again.data(), data, size) != 0) {
    std::abort();  // a record that decodes must be canonical
  }
  for (const FileCheck& f : r->files) {
    if (f.path.empty() || f.path[0] != '/') std::abort();
    (void)DescribeFileIdentity(f.id);
  }
  return 0;
}
