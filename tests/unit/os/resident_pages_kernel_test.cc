// ForEachResidency against real memory: written, read-only-touched (the zero page) and untouched
// pages of an anonymous mapping, the stretches reported in order, and a range with a hole.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "os/resident_pages.h"

namespace procmig {
namespace {

using Stretch = std::tuple<uint64_t, uint64_t, bool>;

std::vector<Stretch> Stretches(uintptr_t start, uint64_t pages, absl::Status* status) {
  std::vector<Stretch> out;
  *status = ForEachResidency(start, pages, [&](uint64_t first, uint64_t count, bool resident) {
    out.emplace_back(first, count, resident);
    return absl::OkStatus();
  });
  return out;
}

TEST_CASE("untouched pages of anonymous memory are reported apart from written and read ones") {
  const size_t ps = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  constexpr uint64_t kPages = 20000;  // more than one mincore slice
  auto* p = static_cast<uint8_t*>(
      mmap(nullptr, kPages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(p != MAP_FAILED);
  madvise(p, kPages * ps, MADV_NOHUGEPAGE);  // one written byte must not fill 2 MiB
  p[3 * ps] = 1;
  std::memset(p + 10 * ps, 7, 3 * ps);
  volatile uint8_t read_only = p[20 * ps];  // maps the zero page: resident, reads as zeros
  (void)read_only;
  std::memset(p + 8190 * ps, 9, 4 * ps);  // across the first slice's end
  p[(kPages - 1) * ps] = 2;
  absl::Status s;
  const std::vector<Stretch> got = Stretches(reinterpret_cast<uintptr_t>(p), kPages, &s);
  REQUIRE(s.ok());
  const std::vector<Stretch> want = {
      {0, 3, false},          {3, 1, true},    {4, 6, false},
      {10, 3, true},          {13, 7, false},  {20, 1, true},
      {21, 8190 - 21, false}, {8190, 4, true}, {8194, kPages - 1 - 8194, false},
      {kPages - 1, 1, true}};
  CHECK(got == want);

  // A hole in the middle: the stretches before it, then ENOMEM naming the pages.
  REQUIRE(munmap(p + 5000 * ps, ps) == 0);
  const std::vector<Stretch> cut = Stretches(reinterpret_cast<uintptr_t>(p), 9000, &s);
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message().find("mincore of pages 0..8191") != std::string::npos);
  CHECK(cut.empty());  // the hole lies in the first slice: nothing reported before the error
  munmap(p, kPages * ps);
}

TEST_CASE("SwapConfigured agrees with /proc/swaps") {
  FILE* f = fopen("/proc/swaps", "r");
  REQUIRE(f != nullptr);
  int lines = 0;
  for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
  fclose(f);
  MESSAGE("/proc/swaps lines: ", lines);
  CHECK(SwapConfigured() == (lines >= 2));
}

}  // namespace
}  // namespace procmig
