#include "procmig/check.h"

#include "os/kernel_caps.h"
#include "os/real_os.h"

namespace procmig {

absl::StatusOr<std::string> RunCheck(CheckFormat format) {
  RealOs os;
  KernelCaps caps = ProbeKernelCaps(os);
  return format == CheckFormat::kJson ? ToJson(caps) : ToTable(caps);
}

}  // namespace procmig
