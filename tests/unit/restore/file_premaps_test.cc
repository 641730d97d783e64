// FilePremaps on this process: real files mapped at chosen free addresses, never over a mapping.
#include "restore/file_premaps.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "doctest/doctest.h"

namespace procmig {
namespace {

constexpr uint64_t kPage = 4096;

// A 4-page file whose page i is filled with 'a' + i.
std::string MakeFile() {
  char path[] = "/tmp/premap_test.XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  for (int i = 0; i < 4; ++i) {
    std::string page(kPage, static_cast<char>('a' + i));
    REQUIRE(write(fd, page.data(), page.size()) == static_cast<ssize_t>(page.size()));
  }
  close(fd);
  return path;
}

// A free range of `pages` pages (reserved, then released).
uint64_t FreeRange(size_t pages) {
  void* p = mmap(nullptr, pages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  munmap(p, pages * kPage);
  return reinterpret_cast<uint64_t>(p);
}

// The /proc/self/maps line starting at `start`, or "".
std::string MapsLine(uint64_t start) {
  std::ifstream maps("/proc/self/maps");
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%lx-", static_cast<unsigned long>(start));
  for (std::string line; std::getline(maps, line);) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return "";
}

TEST_CASE("premaps land at their addresses with their offset and protection, never over anything") {
  const std::string file = MakeFile();
  const uint64_t base = FreeRange(8);
  // Something of ours at base + 6 pages: the premap wanting it must not replace it.
  void* mine = mmap(reinterpret_cast<void*>(base + 6 * kPage), kPage, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  REQUIRE(mine != MAP_FAILED);
  std::memset(mine, 'z', kPage);
  std::vector<PremappedFile> wanted = {
      {base, base + 2 * kPage, kPage, PROT_READ, false, file},  // pages b, c
      {base + 2 * kPage, base + 3 * kPage, 3 * kPage, PROT_READ | PROT_WRITE, false, file},
      {base + 6 * kPage, base + 7 * kPage, 0, PROT_READ, false, file},  // in use
      {base + 4 * kPage, base + 5 * kPage, 0, PROT_READ, false, "/nonexistent/file"},
      {base + 5 * kPage, base + 6 * kPage, 0, PROT_READ, false, "relative/path"}};
  {
    FilePremaps premaps;
    CHECK(premaps.Add(wanted) == 2);
    REQUIRE(premaps.mapped().size() == 2);
    CHECK(premaps.mapped()[0].start == base);
    CHECK(premaps.mapped()[1].start == base + 2 * kPage);
    const auto* p = reinterpret_cast<const char*>(base);
    CHECK(p[0] == 'b');
    CHECK(p[kPage] == 'c');
    CHECK(p[2 * kPage] == 'd');
    const std::string l0 = MapsLine(base), l1 = MapsLine(base + 2 * kPage);
    CHECK(l0.find(" r--p 00001000 ") != std::string::npos);
    CHECK(l0.find(file) != std::string::npos);
    CHECK(l1.find(" rw-p 00003000 ") != std::string::npos);
    CHECK(static_cast<const char*>(mine)[0] == 'z');  // ours, untouched
    CHECK(MapsLine(base + 4 * kPage).empty());
  }
  // Gone with the object; ours stays.
  CHECK(MapsLine(base).empty());
  CHECK(MapsLine(base + 2 * kPage).empty());
  CHECK(static_cast<const char*>(mine)[0] == 'z');
  munmap(mine, kPage);
  unlink(file.c_str());
}

TEST_CASE("a premap a block went stale in is no longer offered to keep") {
  const std::string file = MakeFile();
  const uint64_t base = FreeRange(4);
  std::vector<PremappedFile> wanted = {
      {base, base + 2 * kPage, kPage, PROT_READ, false, file},
      {base + 2 * kPage, base + 3 * kPage, 3 * kPage, PROT_READ | PROT_WRITE, false, file}};
  FilePremaps premaps;
  REQUIRE(premaps.Add(wanted) == 2);
  CHECK(premaps.Covers(base, 2 * kPage));
  CHECK(premaps.Covers(base + kPage, kPage));
  CHECK(premaps.Covers(base + 2 * kPage, kPage));
  CHECK_FALSE(premaps.Covers(base + kPage, 2 * kPage));  // across two premaps
  CHECK_FALSE(premaps.Covers(base + 3 * kPage, kPage));
  CHECK_FALSE(premaps.Covers(base, 0));
  // A shared mapping of the file is never written into, whatever range a block claims.
  const uint64_t shared_at = FreeRange(1);
  std::vector<PremappedFile> shared = {
      {shared_at, shared_at + kPage, 0, PROT_READ | PROT_WRITE, true, file}};
  FilePremaps shared_premaps;
  REQUIRE(shared_premaps.Add(shared) == 1);
  CHECK_FALSE(shared_premaps.Covers(shared_at, kPage));
  CHECK(premaps.kept().size() == 2);
  premaps.MarkStale(base + kPage, kPage);
  REQUIRE(premaps.kept().size() == 1);
  CHECK(premaps.kept()[0].start == base + 2 * kPage);
  CHECK(premaps.mapped().size() == 2);  // still mapped: unmapped with the rest
  premaps.Clear();
  CHECK(MapsLine(base).empty());
  unlink(file.c_str());
}

}  // namespace
}  // namespace procmig
