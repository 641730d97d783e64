// CheckRestorable / CheckRestorableUpFront: the exact refusal for each reason (file content by
// crc32c or build-id, size, mtime, a missing file, CPU, vDSO), every reason listed, the warning
// for an identity the source did not record, and the stat-only re-check of files verified up
// front.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_format.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "migration/restore_check.h"
#include "os/file_identity.h"
#include "os/maps_parser.h"
#include "restore/restore_process.h"

namespace procmig {
namespace {

class TempDir {
 public:
  TempDir() {
    char t[] = "/tmp/restore_check_test.XXXXXX";
    REQUIRE(mkdtemp(t) != nullptr);
    path_ = t;
  }
  ~TempDir() { (void)!system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Sets the file's mtime (ns since the epoch): what `touch -d @...` does.
void SetMtime(const std::string& path, uint64_t ns) {
  timespec ts[2];
  ts[0].tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts[0].tv_nsec = static_cast<long>(ns % 1'000'000'000);
  ts[1] = ts[0];
  REQUIRE(utimensat(AT_FDCWD, path.c_str(), ts, 0) == 0);
}

std::string Crc(uint32_t v) {
  std::string s(4, '\0');
  EncodeFixed32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}

// A record of this process's vDSO, a clean CPU, and one private mapping of `path` (two pages at
// offset 0) with the file's current stamp and `id`.
ProcessStateRecord StateFor(const std::string& path, FileIdentity id) {
  ProcessStateRecord s;
  s.pid = 7;
  std::ifstream in("/proc/self/maps");
  std::stringstream ss;
  ss << in.rdbuf();
  auto maps = MapsParser::Parse(ss.str());
  REQUIRE(maps.ok());
  for (const MemoryRegion& m : *maps) {
    if (m.path == "[vdso]") {
      s.vdso.vdso_start = m.start;
      s.vdso.vdso_end = m.end;
      s.vdso.crc = crc32c::Value(reinterpret_cast<const void*>(m.start), m.size());
    }
  }
  auto st = StatFile(path);
  REQUIRE(st.ok());
  VmaRecord v;
  v.start = 0x100000;
  v.end = 0x102000;
  v.kind = VmaKind::kFile;
  v.prot = PROT_READ;
  v.path = path;
  v.inode = st->inode;
  v.dev_major = major(st->dev);
  v.dev_minor = minor(st->dev);
  v.file_size = st->size;
  v.mtime_ns = st->mtime_ns;
  v.id = std::move(id);
  s.vmas.push_back(v);
  return s;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST_CASE("file content: the crc32c of the mapped range, here and at the source") {
  TempDir d;
  const std::string path = d.path() + "/data";
  const std::string content(5000, 'a');
  WriteFile(path, content);
  const uint32_t good = crc32c::Value(content.data(), content.size());
  ProcessStateRecord s = StateFor(path, {FileIdKind::kCrc32c, Crc(good)});
  CHECK(CheckRestorable(s).ok());
  s.vmas[0].id.id = Crc(0x12345678);
  absl::Status st = CheckRestorable(s);
  CHECK(absl::IsFailedPrecondition(st));
  CHECK(Message(st) == absl::StrFormat("cannot restore pid 7 here: %s: crc32c 0x%08x here, "
                                       "0x12345678 at the source (bytes 0..5000 of the file)",
                                       path, good));
}

TEST_CASE("the content changed, size and mtime kept (touch -d): refused by its crc32c") {
  TempDir d;
  const std::string path = d.path() + "/data";
  WriteFile(path, std::string(8192, 'a'));
  SetMtime(path, 1'700'000'000'000'000'000ull);
  const std::string before(8192, 'a');
  ProcessStateRecord s =
      StateFor(path, {FileIdKind::kCrc32c, Crc(crc32c::Value(before.data(), before.size()))});
  // Up front: verified.
  VerifiedFiles verified;
  REQUIRE(CheckRestorableUpFront(BuildRestoreCheck(s), &verified).ok());
  REQUIRE(verified.size() == 1);
  CHECK(verified[0].source.path == path);
  CHECK(CheckRestorable(s, &verified).ok());
  // Now the file changes and gets its old mtime back.
  std::string after = before;
  after[4100] = 'b';
  WriteFile(path, after);
  SetMtime(path, 1'700'000'000'000'000'000ull);
  // The full check reads the content.
  CHECK(Message(CheckRestorable(s)) ==
        absl::StrFormat("cannot restore pid 7 here: %s: crc32c 0x%08x here, 0x%08x at the "
                        "source (bytes 0..8192 of the file)",
                        path, crc32c::Value(after.data(), after.size()),
                        crc32c::Value(before.data(), before.size())));
  // The stat-only re-check of a verified file sees the ctime `touch -d` cannot forge.
  const std::string m = Message(CheckRestorable(s, &verified));
  CHECK_MESSAGE(m.rfind(absl::StrCat("cannot restore pid 7 here: ", path,
                                     ": changed here since the up-front check (inode "),
                        0) == 0,
                m);
  // The up-front check itself refuses it too.
  CHECK(Message(CheckRestorableUpFront(BuildRestoreCheck(s), &verified)) ==
        Message(CheckRestorable(s)));
  CHECK(verified.empty());
}

TEST_CASE("build-id: the file's here and the one recorded at the source") {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  REQUIRE(n > 0);
  const std::string path(exe, static_cast<size_t>(n));
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto st = StatFile(path);
  REQUIRE(st.ok());
  auto here = ReadElfBuildId(fd, st->size);
  close(fd);
  REQUIRE_MESSAGE(here.ok(), here.status().ToString());
  REQUIRE_MESSAGE(here->has_value(), "the test binary has no build-id");
  ProcessStateRecord s = StateFor(path, {FileIdKind::kBuildId, **here});
  CHECK(CheckRestorable(s).ok());
  s.vmas[0].id.id = std::string("\x9c\x1e\x00\xff", 4);
  CHECK(Message(CheckRestorable(s)) == absl::StrCat("cannot restore pid 7 here: ", path,
                                                    ": build-id ", HexBytes(**here),
                                                    " here, 9c1e00ff at the source"));
}

TEST_CASE("size, mtime, a missing file, CPU and vDSO: every reason listed") {
  TempDir d;
  const std::string path = d.path() + "/data";
  WriteFile(path, std::string(5000, 'a'));
  SetMtime(path, 1'600'000'000'500'000'000ull);
  ProcessStateRecord s = StateFor(path, {FileIdKind::kNone, ""});
  CHECK(CheckRestorable(s).ok());  // no identity recorded: size and mtime only, no warning
  s.vmas[0].file_size = 6000;
  s.vmas[0].mtime_ns = 1'600'000'000'000'000'001ull;
  CHECK(Message(CheckRestorable(s)) ==
        absl::StrCat("cannot restore pid 7 here: ", path,
                     ": mtime 1600000000.500000000 here, 1600000000.000000001 at the source; ",
                     path, ": size 5000 here, 6000 at the source"));
  s = StateFor(path, {FileIdKind::kNone, ""});
  s.vmas[0].path = path + ".gone";
  absl::Status gone = CheckRestorable(s);
  CHECK(Message(gone).rfind(absl::StrCat("cannot restore pid 7 here: ", path, ".gone: "), 0) == 0);
  CHECK(Message(gone).find("No such file or directory") != std::string::npos);
  s.vmas[0].block_id = 3;  // every page came as a block: the file is not needed
  CHECK(CheckRestorable(s).ok());
  s = StateFor(path, {FileIdKind::kNone, ""});
  s.cpu.leaf7_ebx = 0xffffffffu;
  s.vdso.crc ^= 1;
  const std::string m = Message(CheckRestorable(s));
  CHECK_MESSAGE(m.rfind("cannot restore pid 7 here: CPU features the source had are missing "
                        "here: cpuid.7.ebx bit ",
                        0) == 0,
                m);
  CHECK(m.find("; the vDSO differs (its crc32c): the source ran another kernel build") !=
        std::string::npos);
}

TEST_CASE("an identity the source did not record: size and mtime only, with a warning") {
  TempDir d;
  const std::string path = d.path() + "/late.so";
  WriteFile(path, std::string(100, 'x'));
  ProcessStateRecord s = StateFor(path, {FileIdKind::kUnknown, ""});
  std::vector<std::string> warnings;
  CHECK(CheckRestorable(s, nullptr, &warnings).ok());
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == path +
                           ": not identified at the source (mapped during the stop, or "
                           "replaced on disk after it was mapped): its content is not checked");
}

}  // namespace
}  // namespace procmig
