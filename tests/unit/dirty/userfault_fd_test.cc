// UserfaultFd against the running kernel (label kernel): exits 77 when userfaultfd is missing.
#include "dirty/userfault_fd.h"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace procmig {
namespace {

UserfaultFd OpenOrSkip(uint64_t features) {
  absl::StatusOr<UserfaultFd> u = UserfaultFd::Open(features, /*allow_user_mode_only=*/true);
  if (!u.ok()) {
    std::printf("SKIP: %s\n", u.status().ToString().c_str());
    std::exit(77);
  }
  return std::move(*u);
}

TEST_CASE("feature names") {
  CHECK(UffdFeatureNames(0) == "none");
  CHECK(UffdFeatureNames((1u << 15) | (1u << 13)) == "WP_UNPOPULATED|WP_ASYNC");
  CHECK(UffdFeatureNames(uint64_t{1} << 40) == "0x10000000000");
}

TEST_CASE("open, register, write-protect and unregister an anonymous range") {
  UserfaultFd u = OpenOrSkip(0);
  CHECK(u.valid());
  std::printf("userfaultfd features: %s%s\n", UffdFeatureNames(u.features()).c_str(),
              u.user_mode_only() ? " (user-mode only)" : "");
  const size_t len = 4 * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  static_cast<char*>(mem)[0] = 1;
  const auto start = reinterpret_cast<uintptr_t>(mem);
  absl::Status s = u.RegisterWp(start, len, /*missing=*/false);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(u.WriteProtect(start, len, true) == 0);
  CHECK(u.WriteProtect(start, len, false) == 0);
  CHECK(u.Unregister(start, len).ok());
  // Unaligned ranges are refused with the kernel's errno.
  CHECK(u.WriteProtect(start + 1, len, true) == EINVAL);
  UserfaultFd moved = std::move(u);
  CHECK(moved.valid());
  CHECK_FALSE(u.valid());
  munmap(mem, len);
}

TEST_CASE("write-protect across several VMAs (refused as one range before Linux 6.2)") {
  UserfaultFd u = OpenOrSkip(0);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = 8 * page;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  char* base = static_cast<char*>(mem);
  memset(base, 1, len);
  // Three VMAs: [0,3) rw, [3,5) rwx-less-different flags (MADV_DONTFORK), [5,8) rw.
  REQUIRE(madvise(base + 3 * page, 2 * page, MADV_DONTFORK) == 0);
  const auto start = reinterpret_cast<uintptr_t>(base);
  REQUIRE(u.RegisterWp(start, len, false).ok());
  CHECK(u.WriteProtectAcrossVmas(start, len, true, page) == 0);
  CHECK(u.WriteProtectAcrossVmas(start, len, false, page) == 0);
  CHECK(u.Unregister(start, len).ok());
  // A hole is still an error.
  REQUIRE(munmap(base + 4 * page, page) == 0);
  REQUIRE(u.RegisterWp(start, 4 * page, false).ok());
  CHECK(u.WriteProtectAcrossVmas(start, len, true, page) != 0);
  munmap(mem, len);
}

TEST_CASE("a feature the kernel lacks is named in the error") {
  absl::StatusOr<UserfaultFd> u = UserfaultFd::Open(uint64_t{1} << 62, true);
  REQUIRE_FALSE(u.ok());
  CHECK(u.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(u.status().message()).find("0x4000000000000000") != std::string::npos);
}

}  // namespace
}  // namespace procmig
