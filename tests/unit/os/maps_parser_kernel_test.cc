// MapsParser on this process's real /proc/self/maps: regions we create must come back with
// exact bounds, permissions, names and file identity.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "os/maps_parser.h"
#include "os/real_os.h"

namespace procmig {
namespace {

const MemoryRegion* FindStart(const std::vector<MemoryRegion>& regions, uintptr_t start) {
  for (const MemoryRegion& r : regions) {
    if (r.start == start) return &r;
  }
  return nullptr;
}

const MemoryRegion* FindContaining(const std::vector<MemoryRegion>& regions, uintptr_t addr) {
  for (const MemoryRegion& r : regions) {
    if (r.start <= addr && addr < r.end) return &r;
  }
  return nullptr;
}

TEST_CASE("regions mmap'd by the test are found with exact bounds and permissions") {
  RealOs os;
  const size_t ps = os.PageSize();
  // Guard pages (PROT_NONE) on both sides keep the kernel from merging our pages with a
  // neighbour that happens to have the same permissions.
  char* base = static_cast<char*>(
      mmap(nullptr, 5 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  REQUIRE(base != MAP_FAILED);
  REQUIRE(mprotect(base + ps, ps, PROT_READ | PROT_WRITE) == 0);
  REQUIRE(mprotect(base + 2 * ps, ps, PROT_READ) == 0);
  REQUIRE(mprotect(base + 3 * ps, ps, PROT_READ | PROT_WRITE | PROT_EXEC) == 0);
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);

  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());

  const MemoryRegion* rw = FindStart(*regions, b + ps);
  REQUIRE(rw != nullptr);
  CHECK(rw->ToString() == MemoryRegion{rw->start, b + 2 * ps, true, true, false, false, 0, 0, 0, 0,
                                       "", false, RegionKind::kAnonymous}
                              .ToString());
  CHECK(rw->end == b + 2 * ps);
  CHECK(rw->kind == RegionKind::kAnonymous);
  CHECK(rw->IsRamBlockCandidate());

  const MemoryRegion* ro = FindStart(*regions, b + 2 * ps);
  REQUIRE(ro != nullptr);
  CHECK(ro->end == b + 3 * ps);
  CHECK(ro->readable);
  CHECK_FALSE(ro->writable);
  CHECK_FALSE(ro->executable);
  CHECK_FALSE(ro->IsRamBlockCandidate());

  const MemoryRegion* rwx = FindStart(*regions, b + 3 * ps);
  REQUIRE(rwx != nullptr);
  CHECK(rwx->end == b + 4 * ps);
  CHECK(rwx->executable);
  CHECK(rwx->writable);

  // The same through /proc/<pid>/maps.
  absl::StatusOr<std::vector<MemoryRegion>> by_pid = MapsParser::Read(os, getpid());
  REQUIRE(by_pid.ok());
  const MemoryRegion* again = FindStart(*by_pid, b + ps);
  REQUIRE(again != nullptr);
  CHECK(*again == *rw);

  // A name given with PR_SET_VMA_ANON_NAME comes back in brackets (CONFIG_ANON_VMA_NAME).
  if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, b + ps, ps, "procmig test") == 0) {
    regions = MapsParser::Read(os, 0);
    REQUIRE(regions.ok());
    const MemoryRegion* named = FindStart(*regions, b + ps);
    REQUIRE(named != nullptr);
    CHECK(named->end == b + 2 * ps);
    CHECK(named->path == "[anon:procmig test]");
    CHECK(named->kind == RegionKind::kSpecial);
    CHECK(named->IsRamBlockCandidate());
  } else {
    MESSAGE("PR_SET_VMA_ANON_NAME unsupported here; named-region check skipped");
  }
  REQUIRE(munmap(base, 5 * ps) == 0);
}

TEST_CASE("a deleted file with spaces in its name keeps its path, offset and identity") {
  RealOs os;
  const size_t ps = os.PageSize();
  char name[] = "/tmp/procmig maps test (x) XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, static_cast<off_t>(2 * ps)) == 0);
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  void* p = mmap(nullptr, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, static_cast<off_t>(ps));
  REQUIRE(p != MAP_FAILED);
  REQUIRE(unlink(name) == 0);
  close(fd);

  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());
  const MemoryRegion* r = FindStart(*regions, reinterpret_cast<uintptr_t>(p));
  REQUIRE(r != nullptr);
  CHECK(r->end == reinterpret_cast<uintptr_t>(p) + ps);
  CHECK(r->path == name);
  CHECK(r->deleted);
  CHECK(r->offset == ps);
  CHECK(r->inode == st.st_ino);
  CHECK(r->dev_major == major(st.st_dev));
  CHECK(r->dev_minor == minor(st.st_dev));
  CHECK(r->kind == RegionKind::kFile);
  CHECK_FALSE(r->shared);
  CHECK(r->IsRamBlockCandidate());
  REQUIRE(munmap(p, ps) == 0);
}

TEST_CASE("the stack and the vDSO are labelled") {
  RealOs os;
  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());
  // The main thread's stack: doctest runs test cases on the main thread.
  int local = 0;
  const MemoryRegion* stack = FindContaining(*regions, reinterpret_cast<uintptr_t>(&local));
  REQUIRE(stack != nullptr);
  CHECK(stack->kind == RegionKind::kStack);
  CHECK(stack->path == "[stack]");

  uintptr_t vdso = getauxval(AT_SYSINFO_EHDR);
  if (vdso != 0) {
    const MemoryRegion* r = FindStart(*regions, vdso);
    REQUIRE(r != nullptr);
    CHECK(r->path == "[vdso]");
    CHECK(r->kind == RegionKind::kSpecial);
    CHECK_FALSE(r->IsRamBlockCandidate());
  }
}

}  // namespace
}  // namespace procmig
