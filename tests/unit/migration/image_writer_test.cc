// ImageWriter on the real file system: the temporary directory's life, leftovers of killed
// receivers, block files written before the commit and blocks written by it.
#include "migration/image_writer.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/file.h>
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

// A multi-session store: images are named by session id, and a retry is a new session.
TEST_CASE("a store's stale session temporaries go; live ones and other names stay") {
  testing::TempDir dir;
  const std::string session = "0123456789abcdef0123456789abcdef";
  const std::string stale = dir.path() + "/.tmp-" + session + "-AbC123";
  REQUIRE(mkdir(stale.c_str(), 0700) == 0);
  REQUIRE(close(open((stale + "/block-1.bin").c_str(), O_CREAT | O_WRONLY, 0600)) == 0);
  // Not session ids: upper case, 31 digits, another name.
  for (const char* n : {"/.tmp-0123456789ABCDEF0123456789abcdef-AbC123",
                        "/.tmp-0123456789abcdef0123456789abcde-AbC123", "/.tmp-img-AbC123"}) {
    REQUIRE(mkdir((dir.path() + n).c_str(), 0700) == 0);
  }
  // A live writer of another session holds its own.
  auto live = ImageWriter::Begin(dir.path() + "/fedcba9876543210fedcba9876543210");
  REQUIRE(live.ok());
  CHECK(ImageWriter::RemoveStaleSessionTemps(dir.path()) == 1);
  struct stat st;
  CHECK(stat(stale.c_str(), &st) != 0);
  CHECK(stat((*live)->temp_dir().c_str(), &st) == 0);
  CHECK(Temps(dir).size() == 4);
  CHECK(ImageWriter::RemoveStaleSessionTemps(dir.path()) == 0);
}

TEST_CASE("commit: block files already in place, others written; a stray file is refused") {
  testing::TempDir dir;
  auto w = ImageWriter::Begin(dir.path() + "/img");
  REQUIRE(w.ok());
  const Bytes p = PatternPage(9);
  Bytes b1(8 * kPs, 0), b2(2 * kPs, 0);
  std::copy(p.begin(), p.end(), b1.begin() + 5 * kPs);
  std::copy(p.begin(), p.end(), b2.begin() + kPs);
  // Block 1 was written behind the stream (its file holds page 5), block 2 was not.
  auto fd = (*w)->CreateBlockFile(1);
  REQUIRE(fd.ok());
  REQUIRE(ftruncate(fd->get(), 8 * kPs) == 0);
  REQUIRE(pwrite(fd->get(), p.data(), kPs, 5 * kPs) == kPs);
  auto m1 = BlockMemory::Create(8 * kPs, kPs);
  auto m2 = BlockMemory::Create(2 * kPs, kPs);
  REQUIRE(m1.ok());
  REQUIRE(m2.ok());
  std::memcpy((*m1)->page(5), p.data(), kPs);
  (*m1)->MarkNonZero(5);
  std::memcpy((*m2)->page(1), p.data(), kPs);
  (*m2)->MarkNonZero(1);

  ImageManifest m;
  m.blocks.resize(2);
  m.blocks[0].id = 1;
  m.blocks[0].length = 8 * kPs;
  m.blocks[0].crc32c = crc32c::Value(b1.data(), b1.size());
  m.blocks[1].id = 2;
  m.blocks[1].length = 2 * kPs;
  m.blocks[1].crc32c = crc32c::Value(b2.data(), b2.size());
  std::vector<const BlockMemory*> mem = {m1->get(), m2->get()};
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
}

}  // namespace
}  // namespace procmig
