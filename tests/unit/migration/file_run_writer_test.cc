// FileRunWriter against a real file: stretches written with one pwritev, slots reused after a
// flush, the file's old page as an XBZRLE base, errors naming the block and pages, and O_DIRECT
// files written asynchronously through every bank.
#include "migration/file_run_writer.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "receiver_test_util.h"
#include "transport/unique_fd.h"

namespace procmig {
namespace {

using testing::Bytes;
using testing::kPs;
using testing::PatternPage;

Bytes FileBytes(int fd) {
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  Bytes out(static_cast<size_t>(st.st_size));
  REQUIRE(pread(fd, out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
  return out;
}

Bytes Page(const Bytes& file, uint64_t page) {
  return Bytes(file.begin() + page * kPs, file.begin() + (page + 1) * kPs);
}

// A new file open with O_DIRECT; invalid (and a message) where that is refused.
UniqueFd CreateDirect(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600));
  if (!fd.valid()) MESSAGE("skipped: O_DIRECT refused here (", std::strerror(errno), ")");
  return fd;
}

TEST_CASE("pages land at their offsets; gaps, zero pages and slots; nothing before a flush") {
  testing::TempDir dir;
  UniqueFd fd(open((dir.path() + "/b.bin").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  REQUIRE(ftruncate(fd.get(), 600 * kPs) == 0);
  FileRunWriter w(kPs);
  REQUIRE(w.Start(fd.get(), "block 1 (heap)").ok());
  const Bytes a = PatternPage(1), b = PatternPage(2), c = PatternPage(3);
  REQUIRE(w.Add(3, a.data()).ok());
  REQUIRE(w.AddZero(4).ok());
  auto slot = w.Slot(5);
  REQUIRE(slot.ok());
  std::memcpy(*slot, b.data(), kPs);
  CHECK(Page(FileBytes(fd.get()), 3) == Bytes(kPs, 0));  // queued, not written yet
  REQUIRE(w.Add(9, c.data()).ok());                      // a gap: pages 3..5 are written now
  Bytes f = FileBytes(fd.get());
  CHECK(Page(f, 3) == a);
  CHECK(Page(f, 4) == Bytes(kPs, 0));
  CHECK(Page(f, 5) == b);
  REQUIRE(w.Flush().ok());
  CHECK(Page(FileBytes(fd.get()), 9) == c);
  CHECK(w.written() == 4 * kPs);

  // 300 decoded pages in a row: more than the 256 slots of one batch.
  for (uint64_t p = 100; p < 400; ++p) {
    auto s = w.Slot(p);
    REQUIRE(s.ok());
    Bytes want = PatternPage(static_cast<uint32_t>(p));
    std::memcpy(*s, want.data(), kPs);
  }
  REQUIRE(w.Flush().ok());
  f = FileBytes(fd.get());
  bool all = true;
  for (uint64_t p = 100; p < 400; ++p) all = all && Page(f, p) == PatternPage(p);
  CHECK(all);

  // The base of a delta: the page as the file has it, after what was queued is written.
  REQUIRE(w.Add(7, a.data()).ok());
  auto base = w.SlotHolding(7);
  REQUIRE(base.ok());
  CHECK(Bytes(*base, *base + kPs) == a);
  auto hole = w.SlotHolding(500);
  REQUIRE(hole.ok());
  CHECK(Bytes(*hole, *hole + kPs) == Bytes(kPs, 0));
  REQUIRE(w.Flush().ok());
}

// O_DIRECT: pages from an unaligned buffer (as in a read buffer) are copied into aligned slots.
TEST_CASE("a file open with O_DIRECT gets the same bytes, from unaligned sources too") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/d.bin";
  UniqueFd fd = CreateDirect(path);
  if (!fd.valid()) return;
  REQUIRE(ftruncate(fd.get(), 16 * kPs) == 0);
  FileRunWriter w(kPs);
  REQUIRE(w.Start(fd.get(), "block 2 (heap)", /*direct=*/true).ok());
  Bytes buf(3 * kPs + 1);
  const Bytes a = PatternPage(4), b = PatternPage(5);
  std::copy(a.begin(), a.end(), buf.begin() + 1);  // one byte off alignment
  std::copy(b.begin(), b.end(), buf.begin() + 1 + kPs);
  REQUIRE(w.Add(2, buf.data() + 1).ok());
  REQUIRE(w.Add(3, buf.data() + 1 + kPs).ok());
  REQUIRE(w.AddZero(4).ok());
  REQUIRE(w.Flush().ok());
  auto base = w.SlotHolding(3);
  REQUIRE(base.ok());
  CHECK(Bytes(*base, *base + kPs) == b);
  REQUIRE(w.Drain().ok());
  UniqueFd plain(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(plain.valid());
  const Bytes f = FileBytes(plain.get());
  CHECK(Page(f, 2) == a);
  CHECK(Page(f, 3) == b);
  CHECK(Page(f, 4) == Bytes(kPs, 0));
  CHECK((fcntl(fd.get(), F_GETFL) & O_DIRECT) != 0);  // it stayed direct
}

// 256-byte "pages" are below any device's O_DIRECT alignment: the write is refused with EINVAL,
// O_DIRECT goes off for the file, and the bytes go through the page cache.
TEST_CASE("a direct write the file system refuses falls back to the page cache") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/d.bin";
  UniqueFd fd = CreateDirect(path);
  if (!fd.valid()) return;
  constexpr uint32_t kSmall = 256;
  FileRunWriter w(kSmall);
  REQUIRE(w.Start(fd.get(), "block 3 (tiny)", /*direct=*/true).ok());
  Bytes a(kSmall), b(kSmall);
  for (uint32_t i = 0; i < kSmall; ++i) {
    a[i] = static_cast<uint8_t>(i | 1);
    b[i] = static_cast<uint8_t>(255 - i);
  }
  REQUIRE(w.Add(1, a.data()).ok());
  REQUIRE(w.Add(2, b.data()).ok());
  REQUIRE(w.Flush().ok());
  REQUIRE(w.Drain().ok());
  CHECK((fcntl(fd.get(), F_GETFL) & O_DIRECT) == 0);
  const Bytes f = FileBytes(fd.get());
  REQUIRE(f.size() == 3 * kSmall);
  CHECK(Bytes(f.begin() + kSmall, f.begin() + 2 * kSmall) == a);
  CHECK(Bytes(f.begin() + 2 * kSmall, f.end()) == b);
}

// More stretches than banks, through slots and from unaligned sources, with gaps: every bank is
// reused while others are in flight, and each page lands where it belongs.
TEST_CASE("direct writes in flight through every bank land whole") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/d.bin";
  UniqueFd fd = CreateDirect(path);
  if (!fd.valid()) return;
  constexpr uint64_t kPages = 5000;  // 20 full banks of 256
  REQUIRE(ftruncate(fd.get(), kPages * kPs) == 0);
  FileRunWriter w(kPs);
  REQUIRE(w.Start(fd.get(), "block 4 (anon)", /*direct=*/true).ok());
  Bytes buf(kPs + 1);
  for (uint64_t p = 0; p < kPages; ++p) {
    if (p % 97 == 13) continue;  // a gap ends the stretch early
    const Bytes want = PatternPage(static_cast<uint32_t>(p));
    if (p % 3 == 0) {
      auto s = w.Slot(p);
      REQUIRE(s.ok());
      std::memcpy(*s, want.data(), kPs);
    } else if (p % 3 == 1) {
      std::copy(want.begin(), want.end(), buf.begin() + 1);
      REQUIRE(w.Add(p, buf.data() + 1).ok());
      REQUIRE(w.Flush().ok());  // as at the end of a run: the source buffer changes next
    } else {
      REQUIRE(w.AddZero(p).ok());
    }
  }
  REQUIRE(w.Drain().ok());
  CHECK(w.written() == (kPages - kPages / 97 - 1) * kPs);
  // Where this process can make a ring, the writes went through it (not the synchronous path).
  io_uring probe;
  const bool ring = io_uring_queue_init(4, &probe, 0) == 0;
  if (ring) io_uring_queue_exit(&probe);
  MESSAGE("io_uring: ", ring, ", asynchronous writes: ", w.async_writes());
  CHECK(w.async_writes() >= (ring ? kPages / FileRunWriter::kMaxIov : 0));
  UniqueFd plain(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(plain.valid());
  const Bytes f = FileBytes(plain.get());
  REQUIRE(f.size() == kPages * kPs);
  uint64_t wrong = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    const bool zero = p % 97 == 13 || p % 3 == 2;
    if (Page(f, p) != (zero ? Bytes(kPs, 0) : PatternPage(static_cast<uint32_t>(p)))) ++wrong;
  }
  CHECK(wrong == 0);
}

// An asynchronous write that fails (the file is not open for writing) is reported once, by the
// call that collects it, with the block and the pages.
TEST_CASE("a direct write that fails names the block and the pages") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/r.bin";
  {
    UniqueFd make = CreateDirect(path);
    if (!make.valid()) return;
  }
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
  REQUIRE(fd.valid());
  FileRunWriter w(kPs);
  REQUIRE(w.Start(fd.get(), "block 8 (heap)", /*direct=*/true).ok());
  const Bytes a = PatternPage(1);
  REQUIRE(w.Add(5, a.data()).ok());
  REQUIRE(w.Add(6, a.data()).ok());
  absl::Status s = w.Flush();
  if (s.ok()) s = w.Drain();
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(s.message().find("store image: write block 8 (heap) pages 5..6 to its file") !=
        std::string::npos);
  CHECK(w.Drain().ok());  // reported once
  CHECK(w.written() == 0);
}

TEST_CASE("a write that fails names the block and the pages") {
  testing::TempDir dir;
  UniqueFd fd(open((dir.path() + "/b.bin").c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  FileRunWriter w(kPs);
  REQUIRE(w.Start(fd.get(), "block 7 (stack)").ok());
  const Bytes a = PatternPage(1);
  REQUIRE(w.Add(2, a.data()).ok());
  REQUIRE(w.Add(3, a.data()).ok());
  absl::Status s = w.Flush();
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(s.message().find("store image: write block 7 (stack) pages 2..3 to its file") !=
        std::string::npos);
  CHECK(w.Flush().ok());  // nothing left queued
}

}  // namespace
}  // namespace procmig
