// ImageWriter and file-backed BlockMemory on the real file system: the temporary directory's
// life, leftovers of killed receivers, block files that are the blocks' memory, and a full file
// system that must fail a write cleanly (an error, not SIGBUS).
#include "migration/image_writer.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "base/crc32c.h"
#include "migration/image_store.h"
#include "receiver_test_util.h"

namespace procmig {
namespace {

using testing::Bytes;
using testing::kPs;
using testing::PatternPage;

// The entries of `dir` whose names start with ".tmp-".
std::vector<std::string> Temps(const testing::TempDir& dir) {
  std::vector<std::string> out;
  for (const std::string& n : dir.List()) {
    if (n.rfind(".tmp-", 0) == 0) out.push_back(n);
  }
  return out;
}

Bytes ReadFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  struct stat st;
  REQUIRE(fstat(fd.get(), &st) == 0);
  Bytes out(static_cast<size_t>(st.st_size));
  REQUIRE(pread(fd.get(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
  return out;
}

TEST_CASE("file-backed block memory: writes are the file's bytes; resize sizes the file") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/b.bin";
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  auto m = BlockMemory::CreateInFile(std::move(fd), 4 * kPs, kPs);
  REQUIRE(m.ok());
  BlockMemory& b = **m;
  CHECK(b.in_file());
  const Bytes p1 = PatternPage(1), p3 = PatternPage(3);
  REQUIRE(b.Reserve(1, 3).ok());
  std::memcpy(b.page(1), p1.data(), kPs);
  std::memcpy(b.page(3), p3.data(), kPs);
  b.MarkNonZero(1);
  b.MarkNonZero(3);
  Bytes file = ReadFile(path);
  REQUIRE(file.size() == 4 * kPs);
  CHECK(Bytes(file.begin() + kPs, file.begin() + 2 * kPs) == p1);
  CHECK(Bytes(file.begin() + 3 * kPs, file.end()) == p3);
  CHECK(Bytes(file.begin(), file.begin() + kPs) == Bytes(kPs, 0));

  REQUIRE(b.Resize(2 * kPs).ok());  // page 3 cut off: the file shrinks too
  CHECK(ReadFile(path).size() == 2 * kPs);
  REQUIRE(b.Resize(600 * kPs).ok());  // and grows: the cut page reads zero, the kept one holds
  file = ReadFile(path);
  REQUIRE(file.size() == 600 * kPs);
  CHECK(Bytes(file.begin() + kPs, file.begin() + 2 * kPs) == p1);
  CHECK(Bytes(file.begin() + 3 * kPs, file.begin() + 4 * kPs) == Bytes(kPs, 0));
  CHECK(b.page(1)[0] == p1[0]);
  CHECK(b.page(599)[kPs - 1] == 0);
  CHECK(b.CountMaybeNonZero() == 1);
  CHECK(b.Reserve(599, 2).code() == absl::StatusCode::kInternal);  // past the end
  auto anon = BlockMemory::Create(kPs, kPs);
  REQUIRE(anon.ok());
  CHECK_FALSE((*anon)->in_file());
  CHECK((*anon)->Reserve(0, 1).ok());
}

TEST_CASE("a writer's directory: refused when the image exists, removed unless committed") {
  testing::TempDir dir;
  const std::string img = dir.path() + "/img";
  {
    auto w = ImageWriter::Begin(img);
    REQUIRE(w.ok());
    CHECK((*w)->final_dir() == img);
    CHECK(Temps(dir).size() == 1);
    auto f = (*w)->CreateBlockFile(7);
    REQUIRE(f.ok());
    CHECK((*w)->CreateBlockFile(7).status().code() == absl::StatusCode::kAlreadyExists);
    CHECK(dir.List("/" + Temps(dir)[0]) == std::vector<std::string>{"block-7.bin"});
    (*w)->RemoveBlockFile(7);
    CHECK(dir.List("/" + Temps(dir)[0]).empty());
  }
  CHECK(dir.List().empty());  // never committed: nothing left

  REQUIRE(mkdir(img.c_str(), 0700) == 0);  // an empty directory is replaced
  {
    auto w = ImageWriter::Begin(img + "//");
    REQUIRE(w.ok());
    ImageManifest m;
    auto stored = (*w)->Commit(m, {}, Bytes{'p'}, /*sync=*/true);
    REQUIRE(stored.ok());
  }
  CHECK(dir.List() == std::vector<std::string>{"img"});
  CHECK(dir.List("/img") == std::vector<std::string>{"MANIFEST", "process-state.bin"});
  auto again = ImageWriter::Begin(img);
  CHECK(again.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(again.status().message().find("exists and is not empty") != std::string::npos);
}

TEST_CASE("a killed receiver's temporary directory goes; a live writer's stays") {
  testing::TempDir dir;
  const std::string img = dir.path() + "/img";
  // A leftover: the same name, nobody holds its lock.
  const std::string stale = dir.path() + "/.tmp-img-AbC123";
  REQUIRE(mkdir(stale.c_str(), 0700) == 0);
  REQUIRE(close(open((stale + "/block-1.bin").c_str(), O_CREAT | O_WRONLY, 0600)) == 0);
  // Another image's temporary directory is not ours to judge.
  const std::string other = dir.path() + "/.tmp-other-AbC123";
  REQUIRE(mkdir(other.c_str(), 0700) == 0);
  auto live = ImageWriter::Begin(img);
  REQUIRE(live.ok());
  std::vector<std::string> t = Temps(dir);
  REQUIRE(t.size() == 2);  // the live writer's and the other image's
  CHECK(std::find(t.begin(), t.end(), ".tmp-img-AbC123") == t.end());
  CHECK(std::find(t.begin(), t.end(), ".tmp-other-AbC123") != t.end());
  // A second writer of the same name leaves the live one's directory alone.
  auto second = ImageWriter::Begin(img);
  REQUIRE(second.ok());
  struct stat st;
  CHECK(stat((*live)->temp_dir().c_str(), &st) == 0);
  CHECK(Temps(dir).size() == 3);
}

TEST_CASE("commit: block files already in place, others written; a stray file is refused") {
  testing::TempDir dir;
  auto w = ImageWriter::Begin(dir.path() + "/img");
  REQUIRE(w.ok());
  auto fd = (*w)->CreateBlockFile(1);
  REQUIRE(fd.ok());
  auto in_file = BlockMemory::CreateInFile(std::move(*fd), 8 * kPs, kPs);
  REQUIRE(in_file.ok());
  auto anon = BlockMemory::Create(2 * kPs, kPs);
  REQUIRE(anon.ok());
  const Bytes p = PatternPage(9);
  REQUIRE((*in_file)->Reserve(5, 1).ok());
  std::memcpy((*in_file)->page(5), p.data(), kPs);
  (*in_file)->MarkNonZero(5);
  std::memcpy((*anon)->page(1), p.data(), kPs);
  (*anon)->MarkNonZero(1);

  ImageManifest m;
  m.blocks.resize(2);
  m.blocks[0].id = 1;
  m.blocks[0].length = 8 * kPs;
  m.blocks[1].id = 2;
  m.blocks[1].length = 2 * kPs;
  std::vector<const BlockMemory*> mem = {in_file->get(), anon->get()};
  Bytes b1(8 * kPs, 0), b2(2 * kPs, 0);
  std::copy(p.begin(), p.end(), b1.begin() + 5 * kPs);
  std::copy(p.begin(), p.end(), b2.begin() + kPs);
  m.blocks[0].crc32c = crc32c::Value(b1.data(), b1.size());
  m.blocks[1].crc32c = crc32c::Value(b2.data(), b2.size());
  auto extra = (*w)->CreateBlockFile(3);  // a block the manifest does not list
  REQUIRE(extra.ok());
  CHECK((*w)->Commit(m, mem, {}, false).status().code() == absl::StatusCode::kInternal);
  (*w)->RemoveBlockFile(3);
  auto stored = (*w)->Commit(m, mem, {}, /*sync=*/true);
  REQUIRE(stored.ok());
  CHECK(stored->blocks[0].stored_pages == 1);
  CHECK(stored->blocks[1].stored_pages == 1);
  CHECK(dir.List("/img") ==
        std::vector<std::string>{"MANIFEST", "block-1.bin", "block-2.bin", "process-state.bin"});
  auto back = ImageStore::ReadManifest(dir.path() + "/img");
  REQUIRE(back.ok());
  auto r1 = ImageStore::ReadBlock(dir.path() + "/img", *back, back->blocks[0]);
  REQUIRE(r1.ok());
  CHECK(*r1 == b1);
  auto r2 = ImageStore::ReadBlock(dir.path() + "/img", *back, back->blocks[1]);
  REQUIRE(r2.ok());
  CHECK(*r2 == b2);
  struct stat st;
  REQUIRE(stat((dir.path() + "/img/block-1.bin").c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 <= 4 * kPs);  // a hole but for page 5
}

// A 64 KiB tmpfs: a block of 1 MiB cannot be stored there. The write must fail as an error the
// receiver reports, never fault SIGBUS in the receiver.
TEST_CASE("a full file system: Reserve fails with ResourceExhausted, no SIGBUS") {
  testing::TempDir dir;
  if (mount("procmig-test", dir.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") != 0) {
    MESSAGE("skipped: cannot mount a small tmpfs here (", std::strerror(errno), ")");
    return;
  }
  {
    auto w = ImageWriter::Begin(dir.path() + "/img");
    REQUIRE(w.ok());
    auto fd = (*w)->CreateBlockFile(1);
    REQUIRE(fd.ok());
    auto m = BlockMemory::CreateInFile(std::move(*fd), 256 * kPs, kPs);
    REQUIRE(m.ok());
    REQUIRE((*m)->Reserve(0, 4).ok());  // 16 KiB fit
    std::memset((*m)->page(0), 1, 4 * kPs);
    absl::Status s = (*m)->Reserve(4, 252);
    CHECK(s.code() == absl::StatusCode::kResourceExhausted);
    CHECK(s.message().find("full file system") != std::string::npos);
  }
  CHECK(umount(dir.path().c_str()) == 0);
}

}  // namespace
}  // namespace procmig
