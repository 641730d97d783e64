// RestoreCheckRecord: exact encoding, every malformed form refused with the field named, and
// BuildRestoreCheck's one entry per file and identity.
#include "migration/restore_check.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <string>

namespace procmig {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

RestoreCheckRecord Sample() {
  RestoreCheckRecord r;
  r.pid = 42;
  r.cpu.leaf1_ecx = 0x11;
  r.cpu.hwcap2 = 2;
  r.vdso = {0x7000, 0x9000, 0x5000, 0x7000, 0xdeadbeef};
  FileCheck a;
  a.path = "/usr/lib/libfoo.so";
  a.dev_major = 8;
  a.dev_minor = 1;
  a.inode = 99;
  a.size = 4096;
  a.mtime_ns = 1'700'000'000'123'456'789ull;
  a.flags = kFileRequired;
  a.id = {FileIdKind::kBuildId, std::string("\x3a\x4f\x9c\x1e", 4)};
  r.files.push_back(a);
  FileCheck b;
  b.path = "/data/x";
  b.size = 10000;
  b.offset = 4096;
  b.length = 8192;
  b.id = {FileIdKind::kCrc32c, std::string("\x01\x02\x03\x04", 4)};
  r.files.push_back(b);
  FileCheck c;
  c.path = "/late.so";
  c.id = {FileIdKind::kUnknown, ""};
  r.files.push_back(c);
  r.maps.push_back({0x1000, 0x3000, 0, PROT_READ | PROT_EXEC, false, 0});
  r.maps.push_back({0x5000, 0x6000, 0x1000, PROT_READ | PROT_WRITE, true, 1});
  return r;
}

TEST_CASE("round trip with the exact size and bytes") {
  RestoreCheckRecord r = Sample();
  std::string out;
  REQUIRE(EncodeRestoreCheck(r, &out).ok());
  CHECK(out.size() == EncodedSize(r));
  CHECK(out.size() == 8 + 8 + 40 + 36 + 4 + (52 + 4 + 4 + 18) + (52 + 4 + 4 + 7) + (52 + 4 + 8) +
                         4 + 2 * 32);
  // The mappings: count 2, then start, end, offset, prot, shared, reserved, file.
  const size_t m = out.size() - 4 - 2 * 32;
  CHECK(out.substr(m, 4) == std::string("\x02\x00\x00\x00", 4));
  CHECK(out.substr(m + 4 + 32, 32) ==
        std::string("\x00\x50\x00\x00\x00\x00\x00\x00"
                    "\x00\x60\x00\x00\x00\x00\x00\x00"
                    "\x00\x10\x00\x00\x00\x00\x00\x00"
                    "\x03\x01\x00\x00\x01\x00\x00\x00",
                    32));
  CHECK(out.substr(0, 16) == std::string("PMRC\x01\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00", 16));
  // The first file: dev 8:1, inode 99, size 4096, mtime, offset 0, length 0, flags 1, kind 2,
  // id_len 4, reserved, the id, then the path.
  const size_t f = 8 + 8 + 40 + 36 + 4;
  CHECK(out.substr(f, 8) == std::string("\x08\x00\x00\x00\x01\x00\x00\x00", 8));
  CHECK(out.substr(f + 48, 8) == std::string("\x01\x02\x04\x00\x3a\x4f\x9c\x1e", 8));
  CHECK(out.substr(f + 56, 22) == std::string("\x12\x00\x00\x00/usr/lib/libfoo.so", 22));
  auto back = DecodeRestoreCheck(Bytes(out));
  REQUIRE(back.ok());
  CHECK(*back == r);
}

TEST_CASE("every truncation, trailing bytes and each bad field are DataLoss naming it") {
  std::string out;
  REQUIRE(EncodeRestoreCheck(Sample(), &out).ok());
  for (size_t n = 0; n < out.size(); ++n) {
    auto r = DecodeRestoreCheck(Bytes(out.substr(0, n)));
    CHECK_MESSAGE(absl::IsDataLoss(r.status()), "length ", n);
  }
  CHECK(DecodeRestoreCheck(Bytes(out + "x")).status().message() ==
        "decode restore check: 1 trailing bytes after the last field");
  auto expect = [&](size_t at, char value, const std::string& message) {
    std::string bad = out;
    bad[at] = value;
    auto r = DecodeRestoreCheck(Bytes(bad));
    CHECK(absl::IsDataLoss(r.status()));
    CHECK_MESSAGE(r.status().message() == message, "byte ", at);
  };
  expect(0, 'X', "decode restore check: bad magic");
  expect(4, 2, "decode restore check: unknown version 2 (know 1)");
  expect(6, 1, "decode restore check: bad header reserved field");
  expect(12, 1, "decode restore check: bad reserved field after pid");
  const size_t count = 8 + 8 + 40 + 36;
  expect(count + 3, 0x7f, "decode restore check: file count 2130706435 exceeds its bound or the "
                          "bytes left");
  const size_t f = count + 4;
  expect(f + 48, 2, "decode restore check: bad file entry");        // unknown flag bit
  expect(f + 49, 4, "decode restore check: bad file entry");        // unknown kind
  expect(f + 51, 1, "decode restore check: bad file entry");        // reserved
  expect(f + 60, 'u', "decode restore check: bad file entry");      // path not absolute
  expect(f + 49, 1, "decode restore check: bad file entry");        // unknown with an id
  const size_t m = out.size() - 2 * 32;  // the first mapping
  expect(m - 4 + 2, 1, "decode restore check: mapping count 65538 exceeds its bound or the bytes "
                       "left");
  expect(m + 1, 0x11, "decode restore check: bad mapping entry");   // start not page aligned
  expect(m + 24, 8, "decode restore check: bad mapping entry");     // prot
  expect(m + 25, 2, "decode restore check: bad mapping entry");     // shared
  expect(m + 26, 1, "decode restore check: bad mapping entry");     // reserved
  expect(m + 28, 3, "decode restore check: bad mapping entry");     // file index out of range
  expect(m + 32 + 1, 0x20, "decode restore check: bad mapping entry");  // overlaps the first
  expect(m + 9, 0, "decode restore check: bad mapping entry");      // end == start... below start
}

TEST_CASE("the encoder refuses what the decoder would") {
  RestoreCheckRecord r = Sample();
  std::string out;
  r.files[0].id = {FileIdKind::kNone, ""};
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  r = Sample();
  r.files[0].path = "relative";
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  r = Sample();
  r.files[0].offset = 1;  // a build-id covers the whole file
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  r = Sample();
  r.files[1].id.id = "abc";
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  r = Sample();
  r.maps[1].file = 3;
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  r = Sample();
  std::swap(r.maps[0], r.maps[1]);  // not in address order
  CHECK(absl::IsInvalidArgument(EncodeRestoreCheck(r, &out)));
  CHECK(out.empty());
}

TEST_CASE("BuildRestoreCheck: one entry per file and identity, flags merged, others skipped") {
  ProcessStateRecord s;
  s.pid = 7;
  s.cpu.leaf7_ebx = 5;
  s.vdso.crc = 9;
  auto file = [](uint64_t start, uint64_t end, uint64_t offset, const char* path, FileIdentity id,
                 uint32_t block) {
    VmaRecord v;
    v.start = start;
    v.end = end;
    v.offset = offset;
    v.kind = VmaKind::kFile;
    v.path = path;
    v.inode = 5;
    v.file_size = 100000;
    v.mtime_ns = 55;
    v.prot = PROT_READ;
    v.id = std::move(id);
    v.block_id = block;
    return v;
  };
  const FileIdentity lib{FileIdKind::kBuildId, "\x01\x02"};
  s.vmas.push_back(file(0x1000, 0x2000, 0, "/lib/a.so", lib, 3));
  s.vmas.push_back(file(0x2000, 0x4000, 0x1000, "/lib/a.so", lib, 0));
  s.vmas.push_back(file(0x8000, 0x9000, 0, "/data/d", {FileIdKind::kCrc32c, "abcd"}, 0));
  s.vmas.push_back(file(0x9000, 0xa000, 0x3000, "/data/d", {FileIdKind::kCrc32c, "efgh"}, 4));
  VmaRecord gone = file(0xb000, 0xc000, 0, "/tmp/gone", {FileIdKind::kUnknown, ""}, 0);
  gone.deleted = true;
  s.vmas.push_back(gone);
  VmaRecord anon;
  anon.start = 0xd000;
  anon.end = 0xe000;
  anon.path = "[heap]";
  anon.kind = VmaKind::kHeap;
  s.vmas.push_back(anon);
  VmaRecord replaced = file(0xc000, 0xd000, 0, "/lib/replaced.so", {FileIdKind::kUnknown, ""}, 0);
  replaced.file_size = replaced.mtime_ns = 0;  // the source's path names another inode now
  s.vmas.push_back(replaced);
  RestoreCheckRecord r = BuildRestoreCheck(s);
  CHECK(r.pid == 7);
  CHECK(r.cpu == s.cpu);
  CHECK(r.vdso == s.vdso);
  REQUIRE(r.files.size() == 4);
  CHECK(r.files[3].path == "/lib/replaced.so");
  CHECK(r.files[3].size == 0);
  CHECK(r.files[3].id.kind == FileIdKind::kUnknown);
  CHECK(r.files[0].path == "/lib/a.so");
  CHECK(r.files[0].flags == kFileRequired);  // the second mapping has no block
  CHECK(r.files[0].offset == 0);
  CHECK(r.files[0].length == 0);
  CHECK(r.files[1].path == "/data/d");
  CHECK(r.files[1].offset == 0);
  CHECK(r.files[1].length == 0x1000);
  CHECK(r.files[1].flags == kFileRequired);
  CHECK(r.files[2].offset == 0x3000);
  CHECK(r.files[2].id.id == "efgh");
  CHECK(r.files[2].flags == 0);
  // Every file mapping, in address order, naming its entry (not the deleted one).
  REQUIRE(r.maps.size() == 5);
  CHECK(r.maps[0] == FileMapping{0x1000, 0x2000, 0, PROT_READ, false, 0});
  CHECK(r.maps[1] == FileMapping{0x2000, 0x4000, 0x1000, PROT_READ, false, 0});
  CHECK(r.maps[2] == FileMapping{0x8000, 0x9000, 0, PROT_READ, false, 1});
  CHECK(r.maps[3] == FileMapping{0x9000, 0xa000, 0x3000, PROT_READ, false, 2});
  CHECK(r.maps[4] == FileMapping{0xc000, 0xd000, 0, PROT_READ, false, 3});
  std::string out;
  CHECK(EncodeRestoreCheck(r, &out).ok());
}

}  // namespace
}  // namespace procmig
