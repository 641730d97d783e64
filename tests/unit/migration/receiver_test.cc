#include "migration/receiver.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "migration/digest_verifier.h"
#include "migration/image_store.h"
#include "migration/image_writer.h"
#include "migration/process_state.h"
#include "receiver_test_util.h"
#include "transport/channel_factory.h"
#include "unit/transport/test_sockets.h"

namespace procmig {
namespace {

using testing::Bytes;
using testing::kPs;
using testing::PatternPage;
using testing::StreamBuilder;

Bytes Concat(std::initializer_list<Bytes> pages) {
  Bytes out;
  for (const Bytes& p : pages) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes Zeros() { return Bytes(kPs, 0); }

absl::StatusOr<bool> FeedInPieces(Receiver& r, const Bytes& s, size_t piece) {
  absl::StatusOr<bool> last = false;
  for (size_t off = 0; off < s.size(); off += piece) {
    size_t n = std::min(piece, s.size() - off);
    last = r.Feed(0, {s.data() + off, n});
    if (!last.ok()) return last;
  }
  return last;
}

std::vector<uint8_t> Copy(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

// The single-channel stream of the first test and its expected outcome.
struct FullStream {
  Bytes p1 = PatternPage(1), p1b = p1, p2 = PatternPage(2), p3 = PatternPage(3),
        p4 = PatternPage(4), p5 = PatternPage(5), p6 = PatternPage(6), p7 = PatternPage(7),
        p8 = PatternPage(8);
  Bytes stream;
  size_t first_iteration_bytes = 0;  // the stream's bytes up to its first iteration record
  FullStream(const Bytes& state = {'s', 't', 'a', 't', 'e'}) {
    p1b[100] ^= 0x55;
    p1b[4000] = 0;
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 8, "heap@0x10000");
    b.BlockAdd(2, 0x100000, 4, "stack");
    b.Run(1, 0, {b.Raw(p1), b.Zero(), b.Raw(p2), b.Zlib(p3)});
    b.Run(1, 4, {b.Raw(p4)});
    b.Run(2, 0, {b.Raw(p5), b.Raw(p6)});
    b.Iteration(0);
    first_iteration_bytes = b.SoFar().size();
    b.Run(1, 0, {b.Xbzrle(p1, p1b)});
    b.Run(1, 2, {b.Zero()});
    b.Add([](wire::StreamWriter& w) { return w.AddBlockResize({2, 6 * kPs, 6}); });
    b.Run(2, 5, {b.Raw(p7)});
    b.BlockAdd(3, 0x200000, 2, "anon");
    b.Run(3, 1, {b.Zlib(p8)});
    b.BlockAdd(4, 0x300000, 1, "gone");
    b.Run(4, 0, {b.Raw(p2)});
    b.Iteration(1);
    b.Add([](wire::StreamWriter& w) { return w.AddBlockRemove({4}); });
    b.Iteration(2, /*final=*/true);
    if (!state.empty()) b.State(state);
    stream = b.End();
  }
  Bytes Block1() const {
    return Concat({p1b, Zeros(), Zeros(), p3, p4, Zeros(), Zeros(), Zeros()});
  }
  Bytes Block2() const { return Concat({p5, p6, Zeros(), Zeros(), Zeros(), p7}); }
  Bytes Block3() const { return Concat({Zeros(), p8}); }
};

TEST_CASE("every encoding, block add/resize/remove: exact memory, stats, manifest and files") {
  FullStream f;
  Receiver r(1, ReceiverOptions{}, nullptr);
  CHECK(r.state() == Receiver::State::kAwaitingPreamble);
  auto done = FeedInPieces(r, f.stream, 7);  // records split at every kind of boundary
  REQUIRE(done.ok());
  CHECK(*done);
  CHECK(r.state() == Receiver::State::kReceiving);
  auto m = r.Finish();
  REQUIRE(m.ok());
  CHECK(r.state() == Receiver::State::kEnded);
  auto mem = r.BlockMemories();
  REQUIRE(mem.size() == 3);
  CHECK(Copy(mem[0]->bytes()) == f.Block1());
  CHECK(Copy(mem[1]->bytes()) == f.Block2());
  CHECK(Copy(mem[2]->bytes()) == f.Block3());
  CHECK(m->iterations == 3);
  CHECK(m->stats.pages == 12);
  CHECK(m->stats.raw_pages == 7);
  CHECK(m->stats.zero_pages == 2);
  CHECK(m->stats.zlib_pages == 2);
  CHECK(m->stats.xbzrle_pages == 1);
  CHECK(m->stats.bytes == f.stream.size());
  CHECK(Copy(r.process_state()) == Bytes{'s', 't', 'a', 't', 'e'});
  REQUIRE(m->blocks.size() == 3);
  CHECK(m->blocks[0].crc32c == crc32c::Value(f.Block1().data(), 8 * kPs));
  CHECK(m->blocks[1].length == 6 * kPs);
  CHECK(m->blocks[0].digest == DigestState::kNone);

  testing::TempDir dir;
  std::string img = dir.path() + "/img";
  auto stored = ImageStore::Write(img, *m, mem, r.process_state(), /*sync=*/true);
  REQUIRE(stored.ok());
  CHECK(stored->blocks[0].stored_pages == 3);  // pages 0, 3, 4 (page 2 was zeroed again)
  CHECK(stored->blocks[1].stored_pages == 3);
  CHECK(stored->blocks[2].stored_pages == 1);
  CHECK(dir.List() == std::vector<std::string>{"img"});  // no temporary left
  CHECK(dir.List("/img") == std::vector<std::string>{"MANIFEST", "block-1.bin", "block-2.bin",
                                                     "block-3.bin", "process-state.bin"});
  auto back = ImageStore::ReadManifest(img);
  REQUIRE(back.ok());
  CHECK(*back == *stored);
  auto b1 = ImageStore::ReadBlock(img, *back, back->blocks[0]);
  REQUIRE(b1.ok());
  CHECK(*b1 == f.Block1());
  auto b2 = ImageStore::ReadBlock(img, *back, back->blocks[1]);
  REQUIRE(b2.ok());
  CHECK(*b2 == f.Block2());
  auto ps = ImageStore::ReadProcessState(img, *back);
  REQUIRE(ps.ok());
  CHECK(*ps == Bytes{'s', 't', 'a', 't', 'e'});
  struct stat st;
  REQUIRE(stat((img + "/block-1.bin").c_str(), &st) == 0);
  CHECK(st.st_size == 8 * kPs);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 <= 3 * kPs);  // holes for the zero pages
}

// The bytes of a file.
Bytes FileBytes(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.valid());
  struct stat st;
  REQUIRE(fstat(fd.get(), &st) == 0);
  Bytes out(static_cast<size_t>(st.st_size));
  REQUIRE(pread(fd.get(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
  return out;
}

TEST_CASE("a checkpoint receive writes each block to its image file behind the stream") {
  FullStream f;
  testing::TempDir dir;
  const std::string img = dir.path() + "/img";
  auto w = ImageWriter::Begin(img);
  REQUIRE(w.ok());
  ReceiverOptions o;
  std::vector<uint32_t> created, removed;
  o.block_file = [&](const std::array<uint8_t, 16>& session, uint32_t id) {
    CHECK(session == testing::DstPreamble().session_id);
    created.push_back(id);
    return (*w)->CreateBlockFile(id);
  };
  o.block_file_removed = [&](uint32_t id) {
    removed.push_back(id);
    (*w)->RemoveBlockFile(id);
  };
  Receiver r(1, o, nullptr);
  const std::string tmp = (*w)->temp_dir();
  // Up to the first iteration record: block 1's pages are in its file already.
  const size_t head = f.first_iteration_bytes;
  auto part = r.Feed(0, {f.stream.data(), head});
  REQUIRE(part.ok());
  CHECK_FALSE(*part);
  const Bytes want1 = Concat({f.p1, Zeros(), f.p2, f.p3, f.p4, Zeros(), Zeros(), Zeros()});
  CHECK(FileBytes(tmp + "/block-1.bin") == want1);
  auto done = FeedInPieces(r, Bytes(f.stream.begin() + head, f.stream.end()), 4096);
  REQUIRE(done.ok());
  CHECK(*done);
  CHECK(created == std::vector<uint32_t>{1, 2, 3, 4});
  CHECK(removed == std::vector<uint32_t>{4});
  auto m = r.Finish();
  REQUIRE(m.ok());
  auto mem = r.BlockMemories();
  REQUIRE(mem.size() == 3);
  for (const BlockMemory* b : mem) CHECK_FALSE(b->mapped());  // no copy in memory
  // The files hold the blocks exactly, block 4's is gone.
  CHECK(dir.List("/" + dir.List()[0]) ==
        std::vector<std::string>{"block-1.bin", "block-2.bin", "block-3.bin"});
  CHECK(FileBytes(tmp + "/block-1.bin") == f.Block1());  // page 2 zeroed again in the file too
  CHECK(FileBytes(tmp + "/block-2.bin") == f.Block2());  // resized from 4 to 6 pages
  CHECK(FileBytes(tmp + "/block-3.bin") == f.Block3());
  auto stored = (*w)->Commit(*m, mem, r.process_state(), /*sync=*/true);
  REQUIRE(stored.ok());
  CHECK(stored->blocks[0].stored_pages == 3);
  CHECK(dir.List() == std::vector<std::string>{"img"});
  auto back = ImageStore::ReadManifest(img);
  REQUIRE(back.ok());
  CHECK(*back == *stored);
  const Bytes want[] = {f.Block1(), f.Block2(), f.Block3()};
  for (int i = 0; i < 3; ++i) {
    auto b = ImageStore::ReadBlock(img, *back, back->blocks[i]);
    REQUIRE(b.ok());
    CHECK(*b == want[i]);
  }
  struct stat st;
  REQUIRE(stat((img + "/block-1.bin").c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 <= 5 * kPs);  // pages 5..7 never written
}

// A 64 KiB tmpfs cannot take a 1 MiB block: the session fails with an error naming the block,
// the receiver does not crash.
TEST_CASE("a full store file system fails the receive with ResourceExhausted") {
  testing::TempDir dir;
  if (mount("procmig-test", dir.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") != 0) {
    MESSAGE("skipped: cannot mount a small tmpfs here (", std::strerror(errno), ")");
    return;
  }
  {
    auto w = ImageWriter::Begin(dir.path() + "/img");
    REQUIRE(w.ok());
    ReceiverOptions o;
    o.block_file = [&](const std::array<uint8_t, 16>&, uint32_t id) {
      return (*w)->CreateBlockFile(id);
    };
    Receiver r(1, o, nullptr);
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 256, "big");
    for (uint64_t p = 0; p < 256; p += 16) {
      std::vector<wire::PageEntry> run;
      for (uint64_t i = 0; i < 16; ++i) run.push_back(b.Raw(PatternPage(p + i + 1)));
      b.Run(1, p, run);
    }
    b.Iteration(0, /*final=*/true);
    auto done = FeedInPieces(r, b.End(), 65536);
    absl::Status s = done.ok() ? r.Finish().status() : done.status();
    CHECK(s.code() == absl::StatusCode::kResourceExhausted);
    CHECK(s.message().find("store image: write block 1 (big) pages ") != std::string::npos);
    CHECK(r.state() == Receiver::State::kFailed);
  }
  CHECK(umount(dir.path().c_str()) == 0);
}

TEST_CASE("the receiver's transitions are the allowed ones") {
  Receiver r(1, ReceiverOptions{}, nullptr);
  auto m = r.Finish();  // nothing received
  CHECK(m.status().code() == absl::StatusCode::kInternal);
  CHECK(r.Ack().code() == absl::StatusCode::kInternal);
  CHECK(r.Fail(absl::DataLossError("x")).message() == "x");
  CHECK(r.state() == Receiver::State::kFailed);
  CHECK(r.Fail(absl::UnavailableError("y")).message() == "x");  // the first failure wins
  CHECK(r.Feed(0, {}).status().message() == "x");
}

void ExpectDataLoss(const Bytes& stream, const std::vector<std::string>& parts) {
  Receiver r(1, ReceiverOptions{}, nullptr);
  auto done = r.Feed(0, stream);
  if (done.ok()) {
    CHECK_FALSE(*done);
    r.ChannelClosed(0, absl::OkStatus());
  }
  CHECK(r.state() == Receiver::State::kFailed);
  absl::Status s = r.Fail(absl::InternalError("later"));
  CHECK(s.code() == absl::StatusCode::kDataLoss);
  for (const std::string& p : parts) {
    INFO(s.message());
    CHECK(s.message().find(p) != absl::string_view::npos);
  }
}

TEST_CASE("hostile streams are DataLoss naming channel, block and page") {
  Bytes p = PatternPage(9), q = p;
  q[17] ^= 0xff;
  SUBCASE("xbzrle page whose decoded crc does not match") {
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 4, "heap");
    b.Run(1, 0, {b.Raw(p), b.Raw(p), b.Raw(p)});
    auto e = b.Xbzrle(p, q);
    e.page_crc ^= 1;
    b.Run(1, 2, {e});
    ExpectDataLoss(b.End(),
                   {"receive channel 0: block 1 (heap) page 2: crc32c mismatch after xbzrle"});
  }
  SUBCASE("zlib page whose decoded crc does not match") {
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 4, "heap");
    auto e = b.Zlib(q);
    e.page_crc ^= 0x80;
    b.Run(1, 3, {e});
    ExpectDataLoss(b.End(), {"block 1 (heap) page 3: crc32c mismatch after zlib"});
  }
  SUBCASE("raw page with a wrong crc in a non-live run") {
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 4, "heap");
    b.Run(1, 0, {b.Raw(p)});
    Bytes s = b.End();
    // Flip a byte of the page payload: the page crc no longer matches.
    s[s.size() - 28 - 100] ^= 1;
    ExpectDataLoss(s, {"receive channel 0", "raw page crc mismatch"});
  }
  SUBCASE("page beyond the block") {
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 2, "heap");
    b.Run(1, 2, {b.Raw(p)});
    ExpectDataLoss(b.End(), {"receive channel 0"});
  }
  SUBCASE("corrupt xbzrle delta") {
    StreamBuilder b(testing::DstPreamble());
    b.BlockAdd(1, 0x10000, 2, "heap");
    Bytes junk = {0x00, 0x00, 0x05};  // zero-length nzrun in the first pair
    const uint8_t* j = b.Keep(junk);
    b.Run(1, 0, {{wire::PageEncoding::kXbzrle, 0, {j, 3}}});
    ExpectDataLoss(b.End(), {"block 1 (heap) page 0: xbzrle"});
  }
  SUBCASE("truncated stream") {
    FullStream f;
    Bytes cut(f.stream.begin(), f.stream.begin() + f.stream.size() / 2);
    ExpectDataLoss(cut, {"receive channel 0"});
  }
}

TEST_CASE("a torn page never resent on the only channel fails Finish") {
  Bytes p = PatternPage(3);
  StreamBuilder b(testing::DstPreamble());
  b.BlockAdd(1, 0x10000, 2, "heap");
  b.Run(1, 0, {b.Raw(p)}, /*live=*/true);
  Bytes s = b.End();
  s[s.size() - 28 - 5] ^= 1;  // the page changed after its crc: torn
  Receiver r(1, ReceiverOptions{}, nullptr);
  auto done = r.Feed(0, s);
  REQUIRE(done.ok());
  CHECK(*done);
  auto f = r.Finish();
  CHECK(f.status().code() == absl::StatusCode::kDataLoss);
  CHECK(f.status().message() == "receive: 1 torn page(s) never resent (e.g. block 1 page 0)");
}

TEST_CASE("a page torn on the main channel and resent on a secondary one completes") {
  // The sender's channel choice may change between iterations; the main channel's reader must
  // not hold the torn page against its own end of stream.
  Bytes p = PatternPage(5), q = PatternPage(6);
  StreamBuilder m(testing::DstPreamble(0, 2)), s(testing::DstPreamble(1, 2));
  m.BlockAdd(1, 0x10000, 2, "heap");
  m.Run(1, 1, {m.Raw(p)}, /*live=*/true);
  m.Iteration(0);
  s.Iteration(0);
  s.Run(1, 1, {s.Raw(q)});
  m.Iteration(1, /*final=*/true);
  s.Iteration(1, /*final=*/true);
  Bytes main = m.End(), second = s.End();
  // Tear the main channel's copy: a byte of its payload changes after its crc was taken.
  auto at = std::search(main.begin(), main.end(), p.begin(), p.end());
  REQUIRE(at != main.end());
  *(at + 100) ^= 1;
  Receiver r(2, ReceiverOptions{}, nullptr);
  absl::StatusOr<bool> a, b;
  std::thread t0([&] { a = r.Feed(0, main); });
  std::thread t1([&] { b = r.Feed(1, second); });
  t0.join();
  t1.join();
  REQUIRE_MESSAGE(a.ok(), a.status().ToString());
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  CHECK(*a != *b);  // exactly one of them completed the session
  auto f = r.Finish();
  REQUIRE_MESSAGE(f.ok(), f.status().ToString());
  CHECK(f->stats.torn_pages == 1);
  const BlockMemory* mem = r.BlockMemories()[0];
  CHECK(std::equal(q.begin(), q.end(), mem->bytes().begin() + kPs));
}

TEST_CASE("a torn page on a secondary channel never resent fails Finish") {
  Bytes p = PatternPage(11);
  StreamBuilder m(testing::DstPreamble(0, 2)), s(testing::DstPreamble(1, 2));
  m.BlockAdd(1, 0x10000, 2, "heap");
  s.Run(1, 1, {s.Raw(p)}, /*live=*/true);
  Bytes main = m.End(), second = s.End();
  second[second.size() - 28 - 9] ^= 1;  // the page changed after its crc: torn
  Receiver r(2, ReceiverOptions{}, nullptr);
  auto a = r.Feed(0, main);
  REQUIRE(a.ok());
  CHECK_FALSE(*a);
  auto b = r.Feed(1, second);
  REQUIRE(b.ok());
  CHECK(*b);
  auto f = r.Finish();
  CHECK(f.status().code() == absl::StatusCode::kDataLoss);
  CHECK(f.status().message() == "receive: 1 torn page(s) never resent (e.g. block 1 page 1)");
  CHECK(r.state() == Receiver::State::kFailed);
}

// A private read-only mapping of a 3-page file of 'f' bytes, like a library's RELRO segment
// premapped by a live receiver; unmapped and removed on destruction.
struct FilePremap {
  std::string path;
  uint8_t* at = nullptr;
  FilePremap() {
    char tmpl[] = "/tmp/receiver_premap.XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    path = tmpl;
    Bytes f(3 * kPs, 'f');
    REQUIRE(write(fd, f.data(), f.size()) == static_cast<ssize_t>(f.size()));
    void* m = mmap(nullptr, 3 * kPs, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    REQUIRE(m != MAP_FAILED);
    at = static_cast<uint8_t*>(m);
  }
  ~FilePremap() {
    munmap(at, 3 * kPs);
    unlink(path.c_str());
  }
  Bytes Page(int i) const { return Bytes(at + i * kPs, at + (i + 1) * kPs); }
  uint64_t addr(int page) const { return reinterpret_cast<uint64_t>(at) + page * kPs; }
};

TEST_CASE("file-private blocks inside a premap get every applied page there, read-only or not") {
  FilePremap pm;
  const Bytes p1 = PatternPage(1), p2 = PatternPage(2), p3 = PatternPage(3);
  Bytes p1b = p1;
  p1b[7] ^= 0x5a;
  StreamBuilder b(testing::ZeroRunPreamble());
  const uint32_t file_ro = wire::MakeBlockFlags(1, wire::BlockKind::kFilePrivate);
  b.Add([&](wire::StreamWriter& w) {
    return w.AddBlockAdd({1, file_ro, pm.addr(0), 2 * kPs, 2, "/lib/x.so"});
  });
  b.Add([&](wire::StreamWriter& w) {
    return w.AddBlockAdd({2, file_ro, pm.addr(2), kPs, 1, "/lib/x.so"});
  });
  // Not a file block: never mirrored, even where a premap is said to be.
  b.Add([&](wire::StreamWriter& w) {
    return w.AddBlockAdd(
        {3, wire::MakeBlockFlags(3, wire::BlockKind::kAnonymous), 0x7000000, kPs, 1, "anon"});
  });
  b.Run(1, 0, {b.Raw(p1), b.Zero()});  // a zero page over file bytes must zero them
  b.Run(2, 0, {b.Raw(p2)});
  b.ZeroRun(2, 0, 1);  // so must a zero run (then the page again, below)
  b.Run(2, 0, {b.Raw(p2)});
  b.Run(3, 0, {b.Raw(p3)});
  b.Iteration(0);
  b.Run(1, 0, {b.Xbzrle(p1, p1b)});
  b.Run(1, 1, {b.Raw(p3)});
  b.ZeroRun(1, 1, 1);  // data, then a zero run over it: zeros in the premap too
  b.Add([](wire::StreamWriter& w) { return w.AddBlockRemove({2}); });
  b.Iteration(1, /*final=*/true);
  b.State({'s'});
  const Bytes s = b.End();

  std::vector<std::pair<uint64_t, uint64_t>> asked, stale;
  ReceiverOptions o;
  o.populate = false;
  o.premapped = [&](uint64_t start, uint64_t len) {
    asked.push_back({start, len});
    return true;
  };
  o.premap_stale = [&](uint64_t start, uint64_t len) { stale.push_back({start, len}); };
  Receiver r(1, std::move(o), nullptr);
  auto done = FeedInPieces(r, s, 1000);
  REQUIRE(done.ok());
  REQUIRE(*done);
  REQUIRE(r.Finish().ok());
  // Asked for the file blocks only; the removed one made its premap stale.
  CHECK(asked ==
        std::vector<std::pair<uint64_t, uint64_t>>{{pm.addr(0), 2 * kPs}, {pm.addr(2), kPs}});
  CHECK(stale == std::vector<std::pair<uint64_t, uint64_t>>{{pm.addr(2), kPs}});
  // The premap holds exactly what the blocks hold; the file is untouched.
  CHECK(pm.Page(0) == p1b);
  CHECK(pm.Page(1) == Zeros());
  CHECK(pm.Page(2) == p2);
  std::vector<const BlockMemory*> mem = r.BlockMemories();
  REQUIRE(mem.size() == 2);
  CHECK(mem[0]->mirror() == pm.addr(0));
  CHECK(Copy(mem[0]->bytes()) == Concat({p1b, Zeros()}));
  CHECK(mem[1]->mirror() == 0);
  CHECK(Copy(mem[1]->bytes()) == p3);
  FILE* f = fopen(pm.path.c_str(), "rb");
  REQUIRE(f != nullptr);
  Bytes on_disk(3 * kPs);
  CHECK(fread(on_disk.data(), 1, on_disk.size(), f) == on_disk.size());
  fclose(f);
  CHECK(on_disk == Bytes(3 * kPs, 'f'));
}

TEST_CASE("an aborted stream fails the receive as Unavailable") {
  StreamBuilder b(testing::DstPreamble());
  b.BlockAdd(1, 0x10000, 2, "heap");
  Bytes s = b.End(/*aborted=*/true);
  Receiver r(1, ReceiverOptions{}, nullptr);
  CHECK(r.Feed(0, s).status().code() == absl::StatusCode::kUnavailable);
}

Bytes StateWithDigests(std::vector<BlockDigest> d) {
  ProcessStateRecord rec;
  rec.pid = 42;
  rec.cwd = "/";
  rec.exe = "/bin/true";
  rec.digests = std::move(d);
  std::string out;
  REQUIRE(EncodeProcessState(rec, &out).ok());
  return Bytes(out.begin(), out.end());
}

TEST_CASE("digests from the process state: match, mismatch (a lying sender), unknown block") {
  FullStream plain;
  uint32_t c1 = crc32c::Value(plain.Block1().data(), 8 * kPs);
  uint32_t c2 = crc32c::Value(plain.Block2().data(), 6 * kPs);
  uint32_t c3 = crc32c::Value(plain.Block3().data(), 2 * kPs);
  ReceiverOptions opts;
  opts.verify_digests = VerifyBlockDigests;
  SUBCASE("all match") {
    FullStream f(StateWithDigests({{1, 8 * kPs, c1}, {2, 6 * kPs, c2}, {3, 2 * kPs, c3}}));
    Receiver r(1, opts, nullptr);
    REQUIRE(*r.Feed(0, f.stream));
    auto m = r.Finish();
    REQUIRE(m.ok());
    CHECK(m->blocks[0].digest == DigestState::kOk);
    CHECK(m->blocks[2].digest == DigestState::kOk);
    CHECK(m->blocks[0].sent_digest == absl::StrFormat("crc32c:%08x/%d", c1, 8 * kPs));
  }
  SUBCASE("block 2 differs") {
    FullStream f(StateWithDigests({{1, 8 * kPs, c1}, {2, 6 * kPs, c2 ^ 1}}));
    Receiver r(1, opts, nullptr);
    REQUIRE(*r.Feed(0, f.stream));
    auto m = r.Finish();
    CHECK(m.status().code() == absl::StatusCode::kDataLoss);
    CHECK(m.status().message().find("block 2 (stack") != absl::string_view::npos);
    CHECK(r.state() == Receiver::State::kFailed);
  }
  SUBCASE("digest for a removed block") {
    FullStream f(StateWithDigests({{4, kPs, 0}}));
    Receiver r(1, opts, nullptr);
    REQUIRE(*r.Feed(0, f.stream));
    CHECK(r.Finish().status().code() == absl::StatusCode::kDataLoss);
  }
  SUBCASE("a process state that does not decode") {
    FullStream f(Bytes{1, 2, 3});
    Receiver r(1, opts, nullptr);
    REQUIRE(*r.Feed(0, f.stream));
    auto m = r.Finish();
    CHECK(m.status().code() == absl::StatusCode::kDataLoss);
    CHECK(m.status().message().find("decode process state") != absl::string_view::npos);
  }
}

// Pages of [first, first + count) that are resident in `mem` (mincore).
uint64_t ResidentPages(const BlockMemory& mem, uint64_t first, uint64_t count) {
  std::vector<unsigned char> v(count);
  auto* at = const_cast<uint8_t*>(mem.bytes().data() + first * kPs);
  REQUIRE(mincore(at, count * kPs, v.data()) == 0);
  uint64_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

TEST_CASE(
    "zero runs: pages that held data are cleared byte-exact, untouched memory stays untouched") {
  constexpr uint64_t kPages = 1024;  // two 2 MiB pieces
  Bytes p0 = PatternPage(21), p1 = PatternPage(22), p2 = PatternPage(23), p3 = PatternPage(24);
  Bytes block1 = Concat({p0, Zeros(), Zeros(), p3});
  block1.resize(kPages * kPs, 0);
  Bytes block2(kPages * kPs, 0);
  StreamBuilder b(testing::ZeroRunPreamble());
  b.BlockAdd(1, 0x40000000, kPages, "anon");
  b.BlockAdd(2, 0x80000000, kPages, "zeros");
  b.Run(1, 0, {b.Raw(p0), b.Raw(p1), b.Raw(p2), b.Raw(p3)});
  b.Iteration(0);
  b.ZeroRun(1, 1, 2);       // pages 1 and 2 held data
  b.ZeroRun(1, 24, 1000);   // never written
  b.ZeroRun(2, 0, kPages);  // a block of nothing but zeros
  b.Iteration(1, /*final=*/true);
  b.State(StateWithDigests({{1, kPages * kPs, crc32c::Value(block1.data(), block1.size())},
                            {2, kPages * kPs, crc32c::Value(block2.data(), block2.size())}}));
  Bytes s = b.End();

  for (bool populate : {false, true}) {
    CAPTURE(populate);
    ReceiverOptions opts;
    opts.populate = populate;
    opts.verify_digests = VerifyBlockDigests;
    Receiver r(1, opts, nullptr);
    auto done = FeedInPieces(r, s, 4093);
    REQUIRE_MESSAGE(done.ok(), done.status().ToString());
    CHECK(*done);
    r.WaitForPopulationForTest();  // whatever was queued for population is resident now
    auto m = r.Finish();
    REQUIRE_MESSAGE(m.ok(), m.status().ToString());
    auto mem = r.BlockMemories();
    REQUIRE(mem.size() == 2);
    // Only pages that may hold data were written: the second piece of block 1 and all of block
    // 2 were never faulted in (the first piece may be one huge page, faulted by page 0's write),
    // and a populating receiver did not populate what only zeros arrived for. (Checked before
    // anything reads the memory: a read maps the zero page, which mincore counts.)
    CHECK(ResidentPages(*mem[0], 512, 512) == 0);
    CHECK(ResidentPages(*mem[1], 0, kPages) == 0);
    CHECK(Copy(mem[0]->bytes()) == block1);
    CHECK(Copy(mem[1]->bytes()) == block2);
    CHECK(mem[0]->CountMaybeNonZero() == 2);
    CHECK(mem[1]->CountMaybeNonZero() == 0);
    CHECK(m->stats.pages == 4 + 2 + 1000 + kPages);
    CHECK(m->stats.zero_pages == 2 + 1000 + kPages);
    CHECK(m->stats.raw_pages == 4);
    REQUIRE(m->blocks.size() == 2);
    CHECK(m->blocks[0].crc32c == crc32c::Value(block1.data(), block1.size()));
    CHECK(m->blocks[0].digest == DigestState::kOk);
    CHECK(m->blocks[1].digest == DigestState::kOk);

    testing::TempDir dir;
    auto stored = ImageStore::Write(dir.path() + "/img", *m, mem, r.process_state(), false);
    REQUIRE(stored.ok());
    CHECK(stored->blocks[0].stored_pages == 2);  // pages 0 and 3; 1 and 2 are holes again
    CHECK(stored->blocks[1].stored_pages == 0);
  }
}

TEST_CASE("population follows data streaming through a block, not lone pages or zeros") {
  constexpr uint64_t kPiece = 512;  // pages of 2 MiB
  Bytes p = PatternPage(51);
  StreamBuilder b(testing::ZeroRunPreamble());
  b.BlockAdd(1, 0x40000000, 6 * kPiece, "streamed");
  b.BlockAdd(2, 0x80000000, 6 * kPiece, "sparse");
  b.ZeroRun(1, 2 * kPiece, 4 * kPiece);
  b.Run(1, 0, {b.Raw(p)});
  b.Run(1, kPiece, {b.Raw(p)});  // data in two pieces in a row: the rest is queued
  b.ZeroRun(2, 0, 6 * kPiece);
  b.Run(2, 3 * kPiece, {b.Raw(p)});  // a lone page: nothing around it is queued
  b.Iteration(0, /*final=*/true);
  Bytes s = b.End();
  Receiver r(1, ReceiverOptions{}, nullptr);
  REQUIRE(*r.Feed(0, s));
  r.WaitForPopulationForTest();
  auto mem = r.BlockMemories();
  REQUIRE(mem.size() == 2);
  CHECK(ResidentPages(*mem[0], 2 * kPiece, 4 * kPiece) == 4 * kPiece);
  CHECK(ResidentPages(*mem[1], 0, 3 * kPiece) == 0);
  CHECK(ResidentPages(*mem[1], 4 * kPiece, 2 * kPiece) == 0);
  REQUIRE(r.Finish().ok());
}

TEST_CASE("zero runs on a secondary channel: wait for the main channel's block, else DataLoss") {
  Bytes p = PatternPage(31), q = PatternPage(32);
  auto streams = [&](uint32_t zero_first, uint32_t zero_count) {
    StreamBuilder m(testing::ZeroRunPreamble(0, 2)), s(testing::ZeroRunPreamble(1, 2));
    m.BlockAdd(1, 0x10000, 4, "heap");
    m.Run(1, 0, {m.Raw(p), m.Raw(q)});
    s.ZeroRun(1, zero_first, zero_count);
    m.Iteration(0);
    s.Iteration(0);
    m.Run(1, 1, {m.Raw(p)});
    s.ZeroRun(1, 0, 1);  // iteration 1: page 0 is zero now
    m.Iteration(1, /*final=*/true);
    s.Iteration(1, /*final=*/true);
    return std::make_pair(m.End(), s.End());
  };
  SUBCASE("arrives before its block: applied once the block is there") {
    auto [main, second] = streams(2, 2);
    Receiver r(2, ReceiverOptions{}, nullptr);
    absl::StatusOr<bool> a, b;
    std::thread t1([&] { b = r.Feed(1, second); });  // waits for block 1
    std::thread t0([&] { a = r.Feed(0, main); });
    t0.join();
    t1.join();
    REQUIRE_MESSAGE(a.ok(), a.status().ToString());
    REQUIRE_MESSAGE(b.ok(), b.status().ToString());
    auto f = r.Finish();
    REQUIRE_MESSAGE(f.ok(), f.status().ToString());
    CHECK(Copy(r.BlockMemories()[0]->bytes()) == Concat({Zeros(), p, Zeros(), Zeros()}));
    CHECK(f->stats.zero_pages == 3);
    CHECK(f->stats.pages == 6);
  }
  SUBCASE("past the announced range") {
    auto [main, second] = streams(3, 5);
    Receiver r(2, ReceiverOptions{}, nullptr);
    absl::StatusOr<bool> a, b;
    std::thread t1([&] { b = r.Feed(1, second); });
    std::thread t0([&] { a = r.Feed(0, main); });  // its barrier fails with the session
    t0.join();
    t1.join();
    CHECK_FALSE(a.ok());
    CHECK(b.status().code() == absl::StatusCode::kDataLoss);
    CHECK(b.status().message() ==
          "receive channel 1: zero run for block 1 pages 3..7 in iteration 0: the main channel "
          "did not announce that range");
  }
}

TEST_CASE("a torn page resent as part of a zero run completes") {
  Bytes p = PatternPage(41);
  StreamBuilder b(testing::ZeroRunPreamble());
  b.BlockAdd(1, 0x10000, 8, "heap");
  b.Run(1, 5, {b.Raw(p)}, /*live=*/true);
  b.Iteration(0);
  b.ZeroRun(1, 4, 3);
  Bytes s = b.End();
  auto at = std::search(s.begin(), s.end(), p.begin(), p.end());
  REQUIRE(at != s.end());
  *(at + 17) ^= 1;  // torn
  Receiver r(1, ReceiverOptions{}, nullptr);
  auto done = r.Feed(0, s);
  REQUIRE_MESSAGE(done.ok(), done.status().ToString());
  auto f = r.Finish();
  REQUIRE_MESSAGE(f.ok(), f.status().ToString());
  CHECK(f->stats.torn_pages == 1);
  CHECK(Copy(r.BlockMemories()[0]->bytes()) == Bytes(8 * kPs, 0));
}

// ---- Page data read from the socket straight into the block (Feed with its channel).

constexpr uint64_t kSocketBlockPages = 2048;
const char kSocketBlockName[] = "heap";
// The first page run's offset: preamble, then block_add (32 bytes and the name).
constexpr size_t kRunOffset = wire::kPreambleSize + wire::kRecordHeaderSize + 32 + 4;
constexpr size_t kRunPayload = kRunOffset + wire::kRecordHeaderSize + 16 + 1024 * 12;

Bytes SocketPage(uint64_t i) { return PatternPage(static_cast<uint32_t>(i * 3 + 1)); }

// Block 1 (2048 pages), then a run of 1024 raw pages (pages 0..1023, `live` as given), then
// `more` adds what the test wants, then the final iteration and the end.
template <typename More>
Bytes SocketStream(bool live, More more, bool zero_runs = false) {
  StreamBuilder b(zero_runs ? testing::ZeroRunPreamble() : testing::DstPreamble());
  b.BlockAdd(1, 0x10000000, kSocketBlockPages, kSocketBlockName);
  // One contiguous buffer: one iovec for the whole payload (a writer batch holds 1024).
  Bytes pages;
  for (uint64_t i = 0; i < 1024; ++i) {
    Bytes p = SocketPage(i);
    pages.insert(pages.end(), p.begin(), p.end());
  }
  const uint8_t* kept = b.Keep(std::move(pages));
  std::vector<wire::PageEntry> run;
  for (uint64_t i = 0; i < 1024; ++i) {
    run.push_back({wire::PageEncoding::kRaw, 0, {kept + i * kPs, kPs}});
  }
  b.Run(1, 0, run, live);
  more(b);
  b.Iteration(0, /*final=*/true);
  return b.End();
}

struct SocketReceive {
  absl::StatusOr<bool> first = false;  // the Feed of the first read
  size_t next_read = 0;                // NextReadSize after it
  absl::StatusOr<bool> last = false;   // the last Feed
};

// Sends `stream` over TCP loopback and receives it as ReceiveSession does, through a channel of
// `kind`: the first read takes exactly `first` bytes (so the first run is cut there), the next
// ones what NextReadSize says; `after_first` runs after the first Feed. False when the kind is
// not available here.
template <typename AfterFirst>
bool ReceiveOverSocket(Receiver& r, const Bytes& stream, TransportKind kind, size_t first,
                       SocketReceive* out, AfterFirst after_first) {
  auto [tx, rx] = testing::TcpLoopbackPair();
  TransportConfig config;
  config.kind = kind;
  config.read_environment = false;
  absl::StatusOr<OpenedChannel> opened = OpenChannel(std::move(rx), config, "test receive");
  if (!opened.ok()) return false;
  Channel& ch = *opened->channel;
  std::thread writer([&, fd = tx.get()] {
    for (size_t off = 0; off < stream.size();) {
      ssize_t n = send(fd, stream.data() + off, stream.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the receiver gave up and aborted the channel
      off += static_cast<size_t>(n);
    }
    shutdown(fd, SHUT_WR);
  });
  Bytes buf(1u << 20);
  REQUIRE(ch.ReadExact(buf.data(), first).ok());
  out->first = r.Feed(0, {buf.data(), first}, &ch);
  out->next_read = r.NextReadSize(0, buf.size());
  after_first();
  out->last = out->first;
  while (out->last.ok() && !*out->last) {
    absl::StatusOr<size_t> n = ch.ReadSome(buf.data(), r.NextReadSize(0, buf.size()));
    REQUIRE(n.ok());
    if (*n == 0) {
      r.ChannelClosed(0, absl::OkStatus());
      break;
    }
    out->last = r.Feed(0, {buf.data(), *n}, &ch);
  }
  ch.Abort();  // wakes the writer if the receive stopped early
  writer.join();
  (void)ch.Close();
  return true;
}

const BlockMemory& Block(const Receiver& r) {
  std::vector<const BlockMemory*> m = r.BlockMemories();
  REQUIRE(m.size() == 1);
  return *m[0];
}

bool PagesEqual(const BlockMemory& m, uint64_t page, const Bytes& want) {
  return std::memcmp(m.page(page), want.data(), kPs) == 0;
}

TEST_CASE("page runs read from the socket land byte-exact in the block") {
  for (TransportKind kind : {TransportKind::kPosix, TransportKind::kIoUring}) {
    INFO("transport ", static_cast<int>(kind));
    Bytes image(kSocketBlockPages * kPs, 0);  // what the block must hold at the end
    for (uint64_t i = 0; i < 1024; ++i) {
      Bytes p = SocketPage(i);
      std::copy(p.begin(), p.end(), image.begin() + i * kPs);
    }
    Bytes stream = SocketStream(false, [&](StreamBuilder& b) {
      // Pages 0..76 again, as a later iteration sends them: 40 raw (read in place), zero,
      // xbzrle, zlib, 3 raw (too short to be read in place: staged), xbzrle, 30 raw.
      std::vector<wire::PageEntry> run;
      uint64_t page = 0;
      auto raw = [&](int n) {
        for (int k = 0; k < n; ++k, ++page) {
          Bytes p = SocketPage(page + 5000);
          run.push_back(b.Raw(p));
          std::copy(p.begin(), p.end(), image.begin() + page * kPs);
        }
      };
      auto xbzrle = [&] {  // against what the first run put there
        Bytes p = SocketPage(page);
        p[10] ^= 1;
        p[2000] ^= 0xff;
        run.push_back(b.Xbzrle(SocketPage(page), p));
        std::copy(p.begin(), p.end(), image.begin() + page++ * kPs);
      };
      raw(40);
      run.push_back(b.Zero());
      std::fill(image.begin() + page * kPs, image.begin() + (page + 1) * kPs, 0);
      ++page;
      xbzrle();
      Bytes z = SocketPage(page);
      run.push_back(b.Zlib(z));
      std::copy(z.begin(), z.end(), image.begin() + page++ * kPs);
      raw(3);
      xbzrle();
      raw(30);
      b.Run(1, 0, run);
    });
    ReceiverOptions options;
    options.populate = true;
    Receiver r(1, options, nullptr);
    SocketReceive got;
    // The first read ends 5000 bytes into the first run's payload (inside its second page).
    const size_t first = kRunPayload + 5000;
    bool ran = ReceiveOverSocket(r, stream, kind, first, &got, [&] {
      REQUIRE(got.first.ok());
      CHECK_FALSE(*got.first);
      // That one Feed read the rest of the run from the socket itself.
      const BlockMemory& m = Block(r);
      for (uint64_t i = 0; i < 1024; ++i) {
        if (!PagesEqual(m, i, SocketPage(i))) FAIL("page ", i, " differs after the first Feed");
      }
      CHECK(got.next_read == 16u << 10);
    });
    if (!ran) {
      MESSAGE("transport kind not available here; skipped");
      continue;
    }
    REQUIRE_MESSAGE(got.last.ok(), got.last.status().ToString());
    REQUIRE(*got.last);
    auto manifest = r.Finish();
    REQUIRE_MESSAGE(manifest.ok(), manifest.status().ToString());
    const BlockMemory& m = Block(r);
    CHECK(std::memcmp(m.bytes().data(), image.data(), image.size()) == 0);
    CHECK(manifest->stats.raw_pages == 1024 + 40 + 3 + 30);
    CHECK(manifest->stats.pages == 1024 + 77);
    CHECK(manifest->stats.zero_pages == 1);
    CHECK(manifest->stats.xbzrle_pages == 2);
    CHECK(manifest->stats.zlib_pages == 1);
    CHECK(manifest->stats.torn_pages == 0);
    CHECK(manifest->stats.bytes == stream.size());
    CHECK(manifest->blocks[0].crc32c == crc32c::Value(image.data(), image.size()));
    CHECK(m.MaybeNonZero(1023));
    CHECK_FALSE(m.MaybeNonZero(40));    // the zero page
    CHECK_FALSE(m.MaybeNonZero(1024));  // never sent
  }
}

TEST_CASE("a corrupt raw page read from the socket fails as it does from the buffer") {
  Bytes stream = SocketStream(false, [](StreamBuilder&) {});
  stream[kRunPayload + 700 * kPs + 123] ^= 0x08;  // page 700 of the non-live run
  const std::string want = absl::StrCat("receive channel 0: record at offset ", kRunOffset,
                                        " (page_run): page 700: raw page crc mismatch");
  {
    Receiver r(1, ReceiverOptions{}, nullptr);
    auto s = r.Feed(0, stream);  // the whole stream at once: the buffered path
    CHECK(s.status().code() == absl::StatusCode::kDataLoss);
    CHECK(s.status().message() == want);
  }
  Receiver r(1, ReceiverOptions{}, nullptr);
  SocketReceive got;
  REQUIRE(ReceiveOverSocket(r, stream, TransportKind::kPosix, kRunPayload + 100, &got, [] {}));
  CHECK(got.first.status().code() == absl::StatusCode::kDataLoss);
  CHECK(got.first.status().message() == want);
  CHECK(r.state() == Receiver::State::kFailed);
}

TEST_CASE("a torn page read from the socket is not received until resent; a zero run clears it") {
  // Page 5 of the live run changed after its crc. Its garbage is in the block now: its bit must
  // say so (else the zero run's ClearPage would leave it) and it must not count as received.
  auto stream = [](int resend) {
    Bytes s = SocketStream(
        true,
        [resend](StreamBuilder& b) {
          if (resend == 1) b.ZeroRun(1, 4, 3);
          if (resend == 2) b.Run(1, 5, {b.Raw(SocketPage(5))});
        },
        /*zero_runs=*/true);
    s[kRunPayload + 5 * kPs + 9] ^= 0x01;
    return s;
  };
  for (int resend : {0, 1, 2}) {
    INFO("resend ", resend);
    Receiver r(1, ReceiverOptions{}, nullptr);
    SocketReceive got;
    REQUIRE(
        ReceiveOverSocket(r, stream(resend), TransportKind::kPosix, kRunPayload + 100, &got, [&] {
          REQUIRE(got.first.ok());
          CHECK(Block(r).MaybeNonZero(5));
        }));
    REQUIRE_MESSAGE(got.last.ok(), got.last.status().ToString());
    REQUIRE(*got.last);
    auto manifest = r.Finish();
    if (resend == 0) {
      CHECK(manifest.status().code() == absl::StatusCode::kDataLoss);
      CHECK(manifest.status().message() ==
            "receive: 1 torn page(s) never resent (e.g. block 1 page 5)");
      continue;
    }
    REQUIRE_MESSAGE(manifest.ok(), manifest.status().ToString());
    const BlockMemory& m = Block(r);
    Bytes image(kSocketBlockPages * kPs, 0);
    for (uint64_t i = 0; i < 1024; ++i) {
      if (resend == 1 && i >= 4 && i < 7) continue;  // zeroed by the zero run
      Bytes p = SocketPage(i);
      std::copy(p.begin(), p.end(), image.begin() + i * kPs);
    }
    CHECK(std::memcmp(m.bytes().data(), image.data(), image.size()) == 0);
    CHECK(manifest->stats.torn_pages == 1);
    CHECK(manifest->stats.raw_pages == (resend == 1 ? 1023u : 1024u));
    CHECK(manifest->blocks[0].crc32c == crc32c::Value(image.data(), image.size()));
  }
}

}  // namespace
}  // namespace procmig
