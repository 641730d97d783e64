#include "os/maps_parser.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "fakes/fake_os.h"
#include "os/real_os.h"

namespace procmig {
namespace {

MemoryRegion R(uint64_t start, uint64_t end, const char* perms, uint64_t offset, uint32_t major,
               uint32_t minor, uint64_t inode, std::string path, bool deleted, RegionKind kind) {
  MemoryRegion r;
  r.start = start;
  r.end = end;
  r.readable = perms[0] == 'r';
  r.writable = perms[1] == 'w';
  r.executable = perms[2] == 'x';
  r.shared = perms[3] == 's';
  r.offset = offset;
  r.dev_major = major;
  r.dev_minor = minor;
  r.inode = inode;
  r.path = std::move(path);
  r.deleted = deleted;
  r.kind = kind;
  return r;
}

// Captured from `cat /proc/self/maps` on the development machine (Linux 6.18), trimmed.
// Note the trailing space after the inode of the anonymous line: the kernel prints it.
constexpr char kTypical[] =
    "55d0c7a00000-55d0c7a02000 r--p 00000000 fe:00 1048601                    /usr/bin/cat\n"
    "55d0c7a02000-55d0c7a07000 r-xp 00002000 fe:00 1048601                    /usr/bin/cat\n"
    "55d0c8c1e000-55d0c8c3f000 rw-p 00000000 00:00 0                          [heap]\n"
    "7f1c2a400000-7f1c2a6e9000 r--p 00000000 fe:00 1050111                    "
    "/usr/lib/locale/locale-archive\n"
    "7f1c2a7f0000-7f1c2a7f3000 rw-p 00000000 00:00 0 \n"
    "7ffd683cd000-7ffd683ee000 rw-p 00000000 00:00 0                          [stack]\n"
    "7ffd683f6000-7ffd683fa000 r--p 00000000 00:00 0                          [vvar]\n"
    "7ffd683fa000-7ffd683fc000 r-xp 00000000 00:00 0                          [vdso]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";

TEST_CASE("MapsParser parses a typical process layout exactly") {
  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Parse(kTypical);
  REQUIRE(regions.ok());
  std::vector<MemoryRegion> want = {
      R(0x55d0c7a00000, 0x55d0c7a02000, "r--p", 0, 0xfe, 0, 1048601, "/usr/bin/cat", false,
        RegionKind::kFile),
      R(0x55d0c7a02000, 0x55d0c7a07000, "r-xp", 0x2000, 0xfe, 0, 1048601, "/usr/bin/cat", false,
        RegionKind::kFile),
      R(0x55d0c8c1e000, 0x55d0c8c3f000, "rw-p", 0, 0, 0, 0, "[heap]", false, RegionKind::kHeap),
      R(0x7f1c2a400000, 0x7f1c2a6e9000, "r--p", 0, 0xfe, 0, 1050111,
        "/usr/lib/locale/locale-archive", false, RegionKind::kFile),
      R(0x7f1c2a7f0000, 0x7f1c2a7f3000, "rw-p", 0, 0, 0, 0, "", false, RegionKind::kAnonymous),
      R(0x7ffd683cd000, 0x7ffd683ee000, "rw-p", 0, 0, 0, 0, "[stack]", false, RegionKind::kStack),
      R(0x7ffd683f6000, 0x7ffd683fa000, "r--p", 0, 0, 0, 0, "[vvar]", false, RegionKind::kSpecial),
      R(0x7ffd683fa000, 0x7ffd683fc000, "r-xp", 0, 0, 0, 0, "[vdso]", false, RegionKind::kSpecial),
      R(0xffffffffff600000, 0xffffffffff601000, "--xp", 0, 0, 0, 0, "[vsyscall]", false,
        RegionKind::kSpecial),
  };
  REQUIRE(regions->size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK((*regions)[i].ToString() == want[i].ToString());
    CHECK((*regions)[i] == want[i]);
  }
}

// Hand-written from real forms: deleted files, spaces in names, named anonymous memory,
// io_uring rings, memfd, a pre-4.5 thread stack, a guard page, a 3-digit device major.
constexpr char kTricky[] =
    "7f0000000000-7f0000001000 rw-s 00000000 00:01 2049                       /dev/zero "
    "(deleted)\n"
    "7f0000001000-7f0000003000 rw-p 00001000 103:02 131 /home/u/My Files/data base.bin "
    "(deleted)\n"
    "7f0000003000-7f0000004000 rw-p 00000000 00:00 0                          [anon:procmig "
    "arena]\n"
    "7f0000004000-7f0000005000 r--p 00000000 00:00 0                          [vvar_vclock]\n"
    "7f0000005000-7f0000006000 --xp 00000000 00:00 0                          [uprobes]\n"
    "7f0000006000-7f0000007000 rw-s 00000000 00:0e 1057                       "
    "anon_inode:[io_uring]\n"
    "7f0000007000-7f0000008000 rw-p 00000000 00:05 4                          /memfd:jit "
    "(deleted)\n"
    "7f0000008000-7f0000009000 rw-p 00000000 00:00 0                          [stack:1234]\n"
    "7f000000a000-7f000000b000 ---p 00000000 00:00 0 \n"
    "7f000000b000-7f000000c000 rw-p 0000000000000000 FE:00 12                 /tmp/trailing "
    "space ";  // no final newline: the last line still counts

TEST_CASE("MapsParser handles deleted files, spaces, names in brackets and odd devices") {
  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Parse(kTricky);
  REQUIRE(regions.ok());
  std::vector<MemoryRegion> want = {
      R(0x7f0000000000, 0x7f0000001000, "rw-s", 0, 0, 1, 2049, "/dev/zero", true,
        RegionKind::kFile),
      R(0x7f0000001000, 0x7f0000003000, "rw-p", 0x1000, 0x103, 2, 131,
        "/home/u/My Files/data base.bin", true, RegionKind::kFile),
      R(0x7f0000003000, 0x7f0000004000, "rw-p", 0, 0, 0, 0, "[anon:procmig arena]", false,
        RegionKind::kSpecial),
      R(0x7f0000004000, 0x7f0000005000, "r--p", 0, 0, 0, 0, "[vvar_vclock]", false,
        RegionKind::kSpecial),
      R(0x7f0000005000, 0x7f0000006000, "--xp", 0, 0, 0, 0, "[uprobes]", false,
        RegionKind::kSpecial),
      R(0x7f0000006000, 0x7f0000007000, "rw-s", 0, 0, 0xe, 1057, "anon_inode:[io_uring]", false,
        RegionKind::kFile),
      R(0x7f0000007000, 0x7f0000008000, "rw-p", 0, 0, 5, 4, "/memfd:jit", true, RegionKind::kFile),
      R(0x7f0000008000, 0x7f0000009000, "rw-p", 0, 0, 0, 0, "[stack:1234]", false,
        RegionKind::kSpecial),
      R(0x7f000000a000, 0x7f000000b000, "---p", 0, 0, 0, 0, "", false, RegionKind::kAnonymous),
      R(0x7f000000b000, 0x7f000000c000, "rw-p", 0, 0xfe, 0, 12, "/tmp/trailing space ", false,
        RegionKind::kFile),
  };
  REQUIRE(regions->size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK((*regions)[i].ToString() == want[i].ToString());
    CHECK((*regions)[i] == want[i]);
  }
}

TEST_CASE("MapsParser accepts empty text") {
  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Parse("");
  REQUIRE(regions.ok());
  CHECK(regions->empty());
}

struct BadLine {
  const char* text;
  const char* message;
};

TEST_CASE("MapsParser names the line and the field of a malformed line") {
  const BadLine cases[] = {
      {"zz-1000 rw-p 00000000 00:00 0",
       "parse maps line 1: field address 'zz-1000': expected hex <start>-<end>"},
      {"1000 rw-p 00000000 00:00 0",
       "parse maps line 1: field address '1000': expected "
       "<start>-<end>"},
      {"2000-1000 rw-p 00000000 00:00 0",
       "parse maps line 1: field address '2000-1000': start is not below end"},
      {"1000-1000 rw-p 00000000 00:00 0",
       "parse maps line 1: field address '1000-1000': start is not below end"},
      {"10000000000000000-10000000000000001 rw-p 00000000 00:00 0",
       "parse maps line 1: field address '10000000000000000-10000000000000001': expected hex "
       "<start>-<end>"},
      {"1000-2000 rwzp 00000000 00:00 0",
       "parse maps line 1: field perms 'rwzp': expected [r-][w-][x-][ps]"},
      {"1000-2000 rw-pp 00000000 00:00 0",
       "parse maps line 1: field perms 'rw-pp': expected [r-][w-][x-][ps]"},
      {"1000-2000 rw-p 0x000000 00:00 0",
       "parse maps line 1: field offset '0x000000': expected hex"},
      {"1000-2000 rw-p", "parse maps line 1: field offset '': expected hex"},
      {"1000-2000 rw-p 00000000 0000 0",
       "parse maps line 1: field dev '0000': expected hex <major>:<minor>"},
      {"1000-2000 rw-p 00000000 00:g0 0",
       "parse maps line 1: field dev '00:g0': expected hex <major>:<minor>"},
      {"1000-2000 rw-p 00000000 00:00 12a /x",
       "parse maps line 1: field inode '12a': expected decimal"},
      {"1000-2000 rw-p 00000000 00:00", "parse maps line 1: field inode '': expected decimal"},
      {"1000-2000 rw-p 00000000 00:00 99999999999999999999",
       "parse maps line 1: field inode '99999999999999999999': expected decimal"},
  };
  for (const BadLine& c : cases) {
    CAPTURE(c.text);
    absl::StatusOr<std::vector<MemoryRegion>> r = MapsParser::Parse(c.text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(r.status().message()) == c.message);
  }
}

TEST_CASE("MapsParser counts lines: the error names the second line") {
  absl::StatusOr<std::vector<MemoryRegion>> r =
      MapsParser::Parse("1000-2000 rw-p 00000000 00:00 0 \n1000-2000 rw-q 00000000 00:00 0\n");
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()) ==
        "parse maps line 2: field perms 'rw-q': expected [r-][w-][x-][ps]");

  r = MapsParser::Parse("1000-2000 rw-p 00000000 00:00 0 \n\n3000-4000 rw-p 00000000 00:00 0\n");
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()) == "parse maps line 2: field address '': empty line");
}

TEST_CASE("MapsParser::Read reads /proc/PID/maps through the Os and prefixes errors") {
  RealOs real;
  FakeOs os(&real);
  os.SetFile("/proc/4242/maps", kTypical);
  absl::StatusOr<std::vector<MemoryRegion>> regions = MapsParser::Read(os, 4242);
  REQUIRE(regions.ok());
  CHECK(regions->size() == 9);
  CHECK(regions->at(2).kind == RegionKind::kHeap);

  os.SetFile("/proc/self/maps", "1000-2000 rw-p 00000000 00:00 x\n");
  regions = MapsParser::Read(os, 0);
  REQUIRE_FALSE(regions.ok());
  CHECK(regions.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(regions.status().message()) ==
        "read /proc/self/maps: parse maps line 1: field inode 'x': expected decimal");

  os.FailPath("/proc/77/maps", ESRCH);
  regions = MapsParser::Read(os, 77);
  REQUIRE_FALSE(regions.ok());
  CHECK(OsErrno(regions.status()) == ESRCH);
  CHECK(std::string(regions.status().message()) == "open /proc/77/maps: ESRCH (No such process)");
}

}  // namespace
}  // namespace procmig
