// MapsParser: /proc/PID/maps text -> MemoryRegion values.
//
// Pure functions over text (plus one convenience that reads the file through an Os), so they
// can be unit-tested on captured samples and fuzzed. The format is the kernel's
// show_map_vma(): "start-end perms offset major:minor inode [padding path]", one region per
// line, hex numbers without 0x, the path starting after the padding and running to the end of
// the line (so paths with spaces parse; leading spaces of a file name cannot be recovered).
// A malformed line is InvalidArgument naming the line number and the field. Any thread.
#ifndef PROCMIG_OS_MAPS_PARSER_H_
#define PROCMIG_OS_MAPS_PARSER_H_

#include <sys/types.h>

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "os/memory_region.h"
#include "os/os.h"

namespace procmig {

class MapsParser {
 public:
  // Parses a whole maps file. A final line without '\n' is accepted; empty lines are not.
  static absl::StatusOr<std::vector<MemoryRegion>> Parse(std::string_view text);

  // Parses one line (without its '\n'). `line_number` (1-based) is only used in messages.
  static absl::StatusOr<MemoryRegion> ParseLine(std::string_view line, int line_number);

  // Reads /proc/<pid>/maps through `os` and parses it; pid 0 means /proc/self/maps.
  static absl::StatusOr<std::vector<MemoryRegion>> Read(Os& os, pid_t pid);
};

}  // namespace procmig

#endif  // PROCMIG_OS_MAPS_PARSER_H_
