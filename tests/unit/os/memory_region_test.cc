#include "os/memory_region.h"

#include <doctest/doctest.h>

namespace procmig {
namespace {

MemoryRegion Make(bool writable, bool shared, RegionKind kind, std::string path) {
  MemoryRegion r;
  r.start = 0x7f0000000000;
  r.end = 0x7f0000002000;
  r.readable = true;
  r.writable = writable;
  r.shared = shared;
  r.kind = kind;
  r.path = std::move(path);
  return r;
}

TEST_CASE("IsRamBlockCandidate: writable private user memory only") {
  CHECK(Make(true, false, RegionKind::kAnonymous, "").IsRamBlockCandidate());
  CHECK(Make(true, false, RegionKind::kHeap, "[heap]").IsRamBlockCandidate());
  CHECK(Make(true, false, RegionKind::kStack, "[stack]").IsRamBlockCandidate());
  CHECK(Make(true, false, RegionKind::kFile, "/usr/lib/libc.so.6").IsRamBlockCandidate());
  CHECK(Make(true, false, RegionKind::kSpecial, "[anon:arena]").IsRamBlockCandidate());
  CHECK(Make(true, false, RegionKind::kSpecial, "[stack:1234]").IsRamBlockCandidate());

  CHECK_FALSE(Make(false, false, RegionKind::kAnonymous, "").IsRamBlockCandidate());
  CHECK_FALSE(Make(false, false, RegionKind::kFile, "/usr/bin/cat").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, true, RegionKind::kAnonymous, "").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, true, RegionKind::kFile, "/dev/shm/x").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, true, RegionKind::kSpecial, "[anon_shmem:x]").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, false, RegionKind::kSpecial, "[vvar]").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, false, RegionKind::kSpecial, "[vdso]").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, false, RegionKind::kSpecial, "[uprobes]").IsRamBlockCandidate());
  CHECK_FALSE(Make(true, false, RegionKind::kSpecial, "[future_thing]").IsRamBlockCandidate());
}

TEST_CASE("IsRamBlockCandidate: read-only private memory holding private copies") {
  MemoryRegion relro = Make(false, false, RegionKind::kFile, "/usr/lib/libc.so.6");
  relro.private_copies = true;
  CHECK(relro.IsRamBlockCandidate());
  // A restored process's RELRO segment: anonymous, read-only, its pages moved in.
  MemoryRegion restored = Make(false, false, RegionKind::kAnonymous, "");
  restored.private_copies = true;
  CHECK(restored.IsRamBlockCandidate());
  MemoryRegion shared = Make(false, true, RegionKind::kAnonymous, "");
  shared.private_copies = true;
  CHECK_FALSE(shared.IsRamBlockCandidate());
  MemoryRegion vdso = Make(false, false, RegionKind::kSpecial, "[vdso]");
  vdso.private_copies = true;
  CHECK_FALSE(vdso.IsRamBlockCandidate());
}

TEST_CASE("ToString prints the maps line form") {
  MemoryRegion r = Make(true, false, RegionKind::kFile, "/tmp/a b");
  r.executable = true;
  r.offset = 0x3000;
  r.dev_major = 0x103;
  r.dev_minor = 2;
  r.inode = 77;
  r.deleted = true;
  CHECK(r.ToString() == "7f0000000000-7f0000002000 rwxp 00003000 103:02 77 /tmp/a b (deleted)");
  CHECK(r.size() == 0x2000);
  MemoryRegion anon = Make(false, true, RegionKind::kAnonymous, "");
  CHECK(anon.ToString() == "7f0000000000-7f0000002000 r--s 00000000 00:00 0");
}

TEST_CASE("RegionKindName") {
  CHECK(RegionKindName(RegionKind::kAnonymous) == "anonymous");
  CHECK(RegionKindName(RegionKind::kHeap) == "heap");
  CHECK(RegionKindName(RegionKind::kStack) == "stack");
  CHECK(RegionKindName(RegionKind::kFile) == "file");
  CHECK(RegionKindName(RegionKind::kSpecial) == "special");
}

}  // namespace
}  // namespace procmig
