// LayoutSource: where the sender learns the process's memory layout.
//
// Read() parses /proc/self/maps (allocates; outside park windows) and returns a fingerprint of
// the text it parsed; Fingerprint() re-reads the same text into a buffer allocated at
// construction and returns its fingerprint without allocating, so the sender can check, with
// every thread parked, that the layout it sent is still the layout (a thread may have mapped or
// unmapped memory between the last read and the park). Tests substitute a fake describing
// memory they own. One thread (the sender).
#ifndef PROCMIG_MIGRATION_LAYOUT_SOURCE_H_
#define PROCMIG_MIGRATION_LAYOUT_SOURCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "os/memory_region.h"

namespace procmig {

struct Layout {
  std::vector<MemoryRegion> regions;
  uint32_t fingerprint = 0;
};

class LayoutSource {
 public:
  virtual ~LayoutSource() = default;
  virtual absl::StatusOr<Layout> Read() = 0;
  // No allocation. An error (file unreadable, buffer too small) is reported as a fingerprint
  // that matches nothing: the caller then treats the layout as changed.
  virtual uint32_t Fingerprint() = 0;
};

// /proc/self/maps. buffer_bytes bounds the maps text Fingerprint() can read.
class ProcMapsLayout : public LayoutSource {
 public:
  explicit ProcMapsLayout(size_t buffer_bytes = 4u << 20);
  absl::StatusOr<Layout> Read() override;
  uint32_t Fingerprint() override;

 private:
  std::unique_ptr<char[]> buf_;
  size_t cap_;
};

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_LAYOUT_SOURCE_H_
