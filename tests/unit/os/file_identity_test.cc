// File identity: the ELF build-id reader on a real ELF (checked against `readelf -n`), on a
// crafted minimal ELF, on every truncation of it and on hostile headers (reported, never a
// crash); crc32c of a mapped range; the cache.
#include "os/file_identity.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/coding.h"
#include "base/crc32c.h"

namespace procmig {
namespace {

using Bytes = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    char t[] = "/tmp/file_identity_test.XXXXXX";
    REQUIRE(mkdtemp(t) != nullptr);
    path_ = t;
  }
  ~TempDir() { (void)!system(("rm -rf " + path_).c_str()); }
  std::string Write(const std::string& name, const Bytes& b) const {
    std::string p = path_ + "/" + name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return p;
  }

 private:
  std::string path_;
};

// ELF64 header + one PT_NOTE at 120 holding `notes`.
Bytes MiniElf(const Bytes& notes, uint16_t phnum = 1, uint16_t phentsize = 56) {
  Bytes b(120 + notes.size(), 0);
  b[0] = 0x7f, b[1] = 'E', b[2] = 'L', b[3] = 'F', b[4] = 2, b[5] = 1, b[6] = 1;
  EncodeFixed64(&b[32], 64);  // e_phoff
  EncodeFixed16(&b[52], 64);  // e_ehsize
  EncodeFixed16(&b[54], phentsize);
  EncodeFixed16(&b[56], phnum);
  EncodeFixed32(&b[64], 4);  // PT_NOTE
  EncodeFixed64(&b[64 + 8], 120);
  EncodeFixed64(&b[64 + 32], notes.size());
  EncodeFixed64(&b[64 + 40], notes.size());
  EncodeFixed64(&b[64 + 48], 4);
  std::copy(notes.begin(), notes.end(), b.begin() + 120);
  return b;
}

Bytes Note(uint32_t type, uint32_t namesz, uint32_t descsz, size_t desc_bytes, uint8_t first) {
  Bytes n(12, 0);
  EncodeFixed32(&n[0], namesz);
  EncodeFixed32(&n[4], descsz);
  EncodeFixed32(&n[8], type);
  for (char c : std::string("GNU\0", 4)) n.push_back(static_cast<uint8_t>(c));
  for (size_t i = 0; i < desc_bytes; ++i) n.push_back(static_cast<uint8_t>(first + i));
  return n;
}

const Bytes kBuildIdNote = Note(3, 4, 20, 20, 0);

std::string Expected20() {
  std::string s;
  for (int i = 0; i < 20; ++i) s.push_back(static_cast<char>(i));
  return s;
}

absl::StatusOr<std::optional<std::string>> Read(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  off_t size = lseek(fd, 0, SEEK_END);
  auto r = ReadElfBuildId(fd, static_cast<uint64_t>(size));
  close(fd);
  return r;
}

std::string ReadError(const TempDir& d, const Bytes& b) {
  auto r = Read(d.Write("hostile", b));
  CHECK(absl::IsDataLoss(r.status()));
  return std::string(r.status().message());
}

TEST_CASE("a real ELF of this tree: the build-id readelf -n printed at build time") {
  std::ifstream notes(SAMPLE_NOTES);
  std::stringstream ss;
  ss << notes.rdbuf();
  const std::string text = ss.str();
  const size_t at = text.find("Build ID: ");
  REQUIRE_MESSAGE(at != std::string::npos, text);
  std::string want = text.substr(at + 10, text.find('\n', at) - at - 10);
  CHECK(want.size() == 40);  // --build-id=sha1
  auto r = Read(SAMPLE_ELF);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  CHECK(HexBytes(**r) == want);
  auto stamp = StatFile(SAMPLE_ELF);
  REQUIRE(stamp.ok());
  auto id = ComputeFileIdentity(SAMPLE_ELF, *stamp, 0, 4096);
  REQUIRE(id.ok());
  CHECK(id->kind == FileIdKind::kBuildId);
  CHECK(DescribeFileIdentity(*id) == "build-id " + want);
}

TEST_CASE("a crafted minimal ELF: the build-id note, after another note") {
  TempDir d;
  auto r = Read(d.Write("mini", MiniElf(kBuildIdNote)));
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  CHECK(**r == Expected20());
  Bytes two = Note(1, 4, 16, 16, 0x40);  // NT_GNU_ABI_TAG first
  two.insert(two.end(), kBuildIdNote.begin(), kBuildIdNote.end());
  r = Read(d.Write("two", MiniElf(two)));
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  CHECK(**r == Expected20());
  // An 8-byte aligned note (.note.gnu.property: 12-byte header, name "GNU\0", desc at 16).
  Bytes prop = Note(5, 4, 16, 16, 0x70);
  Bytes prop_elf = MiniElf(prop);
  EncodeFixed64(&prop_elf[64 + 48], 8);
  r = Read(d.Write("prop", prop_elf));
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(!r->has_value());
  // An ELF without a build-id, and a file that is not ELF: no build-id, no error.
  r = Read(d.Write("none", MiniElf(Note(1, 4, 16, 16, 0x40))));
  REQUIRE(r.ok());
  CHECK(!r->has_value());
  r = Read(d.Write("text", Bytes{'h', 'e', 'l', 'l', 'o', '\n'}));
  REQUIRE(r.ok());
  CHECK(!r->has_value());
}

TEST_CASE("every truncation of the ELF is reported or ignored, never trusted") {
  TempDir d;
  const Bytes full = MiniElf(kBuildIdNote);
  for (size_t n = 0; n < full.size(); ++n) {
    auto r = Read(d.Write("cut", Bytes(full.begin(), full.begin() + static_cast<long>(n))));
    if (n < 4) {
      CHECK_MESSAGE((r.ok() && !r->has_value()), "length ", n);
    } else {
      CHECK_MESSAGE(absl::IsDataLoss(r.status()), "length ", n);
    }
  }
  auto cut = [&](size_t n) {
    return ReadError(d, Bytes(full.begin(), full.begin() + static_cast<long>(n)));
  };
  CHECK(cut(10) == "ELF identification truncated (10 bytes)");
  CHECK(cut(40) == "ELF header truncated (40 bytes, want 64)");
  CHECK(cut(100) == "ELF program headers at 64 + 56 x 1 run past the end of the file (100 bytes)");
  CHECK(cut(150) ==
        "ELF note segment at 120 (36 bytes) runs past the end of the file (150 bytes)");
}

TEST_CASE("hostile headers and notes are reported with what is wrong") {
  TempDir d;
  CHECK(ReadError(d, MiniElf(kBuildIdNote, 65535)) ==
        "ELF program headers at 64 + 56 x 65535 run past the end of the file (156 bytes)");
  CHECK(ReadError(d, MiniElf(kBuildIdNote, 1, 8)) ==
        "ELF program header entries of 8 bytes (want >= 56)");
  Bytes b = MiniElf(kBuildIdNote);
  b[4] = 7;
  CHECK(ReadError(d, b) == "unknown ELF class 7");
  b = MiniElf(kBuildIdNote);
  EncodeFixed64(&b[64 + 8], ~uint64_t{0});
  CHECK(ReadError(d, b) == "ELF note segment at 18446744073709551615 (36 bytes) runs past the "
                           "end of the file (156 bytes)");
  CHECK(ReadError(d, MiniElf(Note(3, 0xffffffff, 20, 20, 0))) ==
        "ELF note at 0 (name 4294967295 bytes, desc 20 bytes) runs past its segment (36 bytes "
        "at 120)");
  CHECK(ReadError(d, MiniElf(Note(3, 4, 0xfffffff0, 20, 0))) ==
        "ELF note at 0 (name 4 bytes, desc 4294967280 bytes) runs past its segment (36 bytes at "
        "120)");
  CHECK(ReadError(d, MiniElf(Note(3, 4, 0, 0, 0))) ==
        "ELF build-id note holds 0 bytes (want 1..64)");
  // The identity of a hostile ELF falls back to the crc32c of the range, and says why.
  const Bytes hostile = MiniElf(kBuildIdNote, 65535);
  const std::string path = d.Write("hostile2", hostile);
  auto stamp = StatFile(path);
  REQUIRE(stamp.ok());
  std::string problem;
  auto id = ComputeFileIdentity(path, *stamp, 0, 4096, &problem);
  REQUIRE(id.ok());
  CHECK(id->kind == FileIdKind::kCrc32c);
  CHECK(problem == "ELF program headers at 64 + 56 x 65535 run past the end of the file (156 bytes)");
  CHECK(DecodeFixed32(reinterpret_cast<const uint8_t*>(id->id.data())) ==
        crc32c::Value(hostile.data(), hostile.size()));
}

TEST_CASE("crc32c of the mapped range: the part inside the file") {
  TempDir d;
  Bytes data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  const std::string path = d.Write("data", data);
  auto stamp = StatFile(path);
  REQUIRE(stamp.ok());
  CHECK(stamp->size == 10000);
  auto id = ComputeFileIdentity(path, *stamp, 4096, 8192);  // 4096..10000
  REQUIRE(id.ok());
  CHECK(id->kind == FileIdKind::kCrc32c);
  const uint32_t want = crc32c::Value(data.data() + 4096, 10000 - 4096);
  CHECK(DecodeFixed32(reinterpret_cast<const uint8_t*>(id->id.data())) == want);
  CHECK(DescribeFileIdentity(*id) == absl::StrFormat("crc32c 0x%08x", want));
  auto past = ComputeFileIdentity(path, *stamp, 12288, 4096);
  REQUIRE(past.ok());
  CHECK(DecodeFixed32(reinterpret_cast<const uint8_t*>(past->id.data())) == 0u);
  // A stamp that no longer matches: the file changed since.
  FileStamp old = *stamp;
  old.mtime_ns += 1;
  auto changed = ComputeFileIdentity(path, old, 0, 4096);
  CHECK(absl::IsFailedPrecondition(changed.status()));
  CHECK(changed.status().message() == path + ": changed since it was stat'ed");
  CHECK(absl::IsUnavailable(ComputeFileIdentity(path + ".gone", *stamp, 0, 1).status()));
}

TEST_CASE("the cache computes once, shares an ELF's build-id across ranges, remembers misses") {
  TempDir d;
  const std::string elf = d.Write("mini", MiniElf(kBuildIdNote));
  const std::string data = d.Write("data", Bytes(5000, 0x33));
  auto es = StatFile(elf);
  auto ds = StatFile(data);
  REQUIRE(es.ok());
  REQUIRE(ds.ok());
  FileStamp ek{es->dev, es->inode, es->size, es->mtime_ns};
  FileStamp dk{ds->dev, ds->inode, ds->size, ds->mtime_ns};
  FileIdentityCache cache;
  CHECK(!cache.Find(ek, 0, 4096).has_value());
  FileIdentity a = cache.Get(elf, ek, 0, 4096);
  CHECK(a.kind == FileIdKind::kBuildId);
  CHECK(cache.Get(elf, ek, 4096, 8192) == a);  // another segment of the same ELF
  CHECK(cache.computed() == 1);
  CHECK(cache.Find(ek, 8192, 4096) == a);
  FileIdentity c = cache.Get(data, dk, 0, 4096);
  CHECK(c.kind == FileIdKind::kCrc32c);
  CHECK(cache.Get(data, dk, 0, 4096) == c);
  CHECK(cache.computed() == 2);
  CHECK(!cache.Find(dk, 4096, 4096).has_value());  // crc32c is per range
  FileStamp stale = dk;
  stale.size += 1;
  CHECK(cache.Get(data, stale, 0, 4096).kind == FileIdKind::kUnknown);
  CHECK(cache.Find(stale, 0, 4096)->kind == FileIdKind::kUnknown);
  CHECK(cache.computed() == 3);
}

}  // namespace
}  // namespace procmig
