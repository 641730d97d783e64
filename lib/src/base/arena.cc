#include "base/arena.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

namespace procmig {

absl::StatusOr<Arena> Arena::Create(size_t capacity, const char* name) {
  if (capacity == 0) return absl::InvalidArgumentError("create arena: capacity is 0");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (capacity > std::numeric_limits<size_t>::max() - (page - 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("create arena: capacity ", capacity, " overflows when rounded to pages"));
  }
  const size_t rounded = (capacity + page - 1) / page * page;
  void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    std::string step = absl::StrCat("create arena: mmap ", rounded, " bytes");
    if (err == ENOMEM) return ErrnoStatus(absl::StatusCode::kResourceExhausted, step, err);
    return ErrnoStatus(step, err);
  }
  // Best effort: shows the mapping as "[anon:<name>]" in /proc/PID/maps (Linux 5.17+ with
  // CONFIG_ANON_VMA_NAME), which helps a user reading maps and costs nothing when unsupported.
  if (name != nullptr && name[0] != '\0') {
    (void)prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, reinterpret_cast<unsigned long>(p), rounded,
                reinterpret_cast<unsigned long>(name));
  }
  return Arena(static_cast<uint8_t*>(p), rounded);
}

Arena::Arena(Arena&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      used_(std::exchange(other.used_, 0)) {}

Arena& Arena::operator=(Arena&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) munmap(base_, capacity_);
    base_ = std::exchange(other.base_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
    used_ = std::exchange(other.used_, 0);
  }
  return *this;
}

Arena::~Arena() {
  if (base_ != nullptr) munmap(base_, capacity_);
}

void* Arena::Allocate(size_t size, size_t align) {
  if (align == 0 || (align & (align - 1)) != 0 || align > 4096) return nullptr;
  if (size == 0) size = 1;
  // base_ is page-aligned, so aligning the offset aligns the address.
  size_t start = (used_ + align - 1) & ~(align - 1);
  if (start < used_ || start > capacity_ || size > capacity_ - start) return nullptr;
  used_ = start + size;
  return base_ + start;
}

}  // namespace procmig
