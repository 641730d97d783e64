// PageSender on its own: memory the test owns goes out over a MemoryChannel and comes back
// through the real StreamReader. Checks which records a block's zero stretches become (zero_run
// against inline zero descriptors, by the byte-cost rule in EmitRun), the exact page ranges, the
// raw pages' bytes after the staging area's compaction, and the counters; and which pages zlib
// takes when the link (a channel reporting a scripted send queue) is busy or about to run dry.
#include "migration/page_sender.h"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "codec/zlib_codec.h"
#include "os/fault_guard.h"
#include "transport/memory_channel.h"
#include "wire/stream_reader.h"

namespace procmig {
namespace {

constexpr uint32_t kPage = 4096;

struct Mapping {
  explicit Mapping(size_t pages) : pages(pages) {
    void* m =
        mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    p = static_cast<uint8_t*>(m);
  }
  ~Mapping() { munmap(p, pages * kPage); }
  // Page i gets bytes that depend on (tag, i) and are never all zero.
  void Fill(size_t i, uint8_t tag) {
    for (size_t k = 0; k < kPage; ++k)
      p[i * kPage + k] = static_cast<uint8_t>((tag + i * 7 + k) | 1);
  }
  RamBlock Block(uint32_t id) const {
    RamBlock b;
    b.id = id;
    b.start = reinterpret_cast<uintptr_t>(p);
    b.length = pages * kPage;
    b.page_size = kPage;
    b.name = "anon@test";
    b.prot = PROT_READ | PROT_WRITE;
    return b;
  }
  uint8_t* p;
  size_t pages;
};

// One record as the receiver sees it: type, block, first page, and per page "R" raw / "Z" zero
// for page runs, or the count for zero runs.
struct Seen {
  wire::RecordType type;
  uint32_t block = 0;
  uint64_t first = 0;
  uint64_t count = 0;
  std::string encodings;
  bool operator==(const Seen&) const = default;
};

std::string Describe(const std::vector<Seen>& v) {
  std::string out;
  for (const Seen& s : v) {
    out += std::string(wire::RecordTypeName(s.type)) + "(" + std::to_string(s.block) + ", " +
           std::to_string(s.first) + ", " + std::to_string(s.count) + ", " + s.encodings + ") ";
  }
  return out;
}

// A channel that passes everything through to `inner`; the test channels below change one thing.
class ForwardingChannel : public Channel {
 public:
  ForwardingChannel(std::string name, Channel* inner) : Channel(std::move(name)), inner_(inner) {}
  absl::Status WriteV(const iovec* iov, size_t n) override { return inner_->WriteV(iov, n); }
  absl::Status ReadExact(void* buf, size_t len) override { return inner_->ReadExact(buf, len); }
  absl::StatusOr<size_t> ReadSome(void* buf, size_t cap) override {
    return inner_->ReadSome(buf, cap);
  }
  absl::Status Shutdown() override { return inner_->Shutdown(); }
  void Abort() override { inner_->Abort(); }
  absl::Status Close() override { return inner_->Close(); }

 private:
  Channel* inner_;
};

// A channel that writes through to `inner` and reports the send queue `queue` says: the link as
// the page sender sees it, scripted (the real TCP queue is tested in tests/unit/transport).
class ScriptedQueueChannel : public ForwardingChannel {
 public:
  ScriptedQueueChannel(Channel* inner, std::function<std::optional<SendQueue>()> queue)
      : ForwardingChannel("scripted " + inner->name(), inner), queue_(std::move(queue)) {}
  std::optional<SendQueue> PendingSend() const override { return queue_(); }
  std::string_view kind() const override { return "scripted"; }

 private:
  std::function<std::optional<SendQueue>()> queue_;
};

// Compression for SendAndRead: the level, compress_adaptive, and the queue the channel reports
// (nullopt: a channel that cannot say).
struct Zlib {
  int level = 1;
  bool adaptive = true;
  std::function<std::optional<Channel::SendQueue>()> queue = [] {
    return std::optional<Channel::SendQueue>();
  };
};

struct Sent {
  std::vector<Seen> runs;  // page_run and zero_run records, in order
  uint64_t bytes = 0;      // the whole stream
  PageSenderCounters counters;
  uint64_t end_pages = 0;  // end_of_stream's page count
  uint64_t features = 0;
  std::vector<uint32_t> fault_blocks;  // TakeFaultBlock() after each block
};

// An in-process channel pair with room for every test's whole stream.
std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> Pipe() {
  MemoryPipeOptions o;
  o.capacity = 64u << 20;
  auto pair = MemoryChannel::CreatePair(o);
  REQUIRE(pair.ok());
  return *std::move(pair);
}

// 4 KiB pages and a fixed session id; the rest as PageSenderConfig says.
PageSenderConfig TestConfig() {
  PageSenderConfig c;
  c.preamble.page_size = kPage;
  for (int i = 0; i < 16; ++i) c.preamble.session_id[i] = static_cast<uint8_t>(i + 1);
  return c;
}

// Sends `blocks` in full, reads the stream back and checks every raw page against the memory.
// `live`: as while the program runs (zero pages looked for in place first), else as the frozen
// copy sends (every page copied first).
// `zlib`: compressed pages are inflated and checked like raw ones, and show as "C".
Sent SendAndRead(const std::vector<std::pair<const Mapping*, uint32_t>>& blocks, bool zero_runs,
                 bool live = true, const Zlib* zlib = nullptr) {
  auto pair = Pipe();
  PageSenderConfig c = TestConfig();
  c.zero_runs = zero_runs;
  std::optional<ScriptedQueueChannel> scripted;
  Channel* channel = pair.first.get();
  if (zlib != nullptr) {
    c.compress_level = zlib->level;
    c.compress_threads = 2;
    c.compress_adaptive = zlib->adaptive;
    scripted.emplace(channel, zlib->queue);
    channel = &*scripted;
  }
  auto inflater = ZlibDecompressor::Create();
  REQUIRE(inflater.ok());
  std::vector<uint8_t> page(kPage);
  auto sender = PageSender::Create(c, channel);
  REQUIRE_MESSAGE(sender.ok(), sender.status().ToString());
  PageSender& s = **sender;
  for (const auto& [m, id] : blocks) REQUIRE(s.AddBlock(m->Block(id)).ok());
  std::vector<uint32_t> faults;
  for (const auto& [m, id] : blocks) {
    REQUIRE(s.SendPages(m->Block(id), 0, m->pages, live).ok());
    if (uint32_t f = s.TakeFaultBlock()) faults.push_back(f);
  }
  REQUIRE(s.EndIteration(0, 0, 0, /*final=*/true).ok());
  REQUIRE(s.AddEndOfStream(false).ok());
  REQUIRE(s.Flush().ok());
  REQUIRE(pair.first->Shutdown().ok());

  Sent out;
  out.fault_blocks = faults;
  out.counters = s.counters();
  wire::StreamReader reader;
  std::vector<uint8_t> buf(1 << 20);
  while (!reader.ended()) {
    auto n = pair.second->ReadSome(buf.data(), buf.size());
    REQUIRE_MESSAGE(n.ok(), n.status().ToString());
    REQUIRE(*n > 0);
    out.bytes += *n;
    REQUIRE(reader.Feed({buf.data(), *n}).ok());
    while (true) {
      auto r = reader.Next();
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      if (*r == nullptr) break;
      if (auto* pre = std::get_if<wire::Preamble>(&(*r)->body)) out.features = pre->features;
      if (auto* z = std::get_if<wire::ZeroRun>(&(*r)->body)) {
        out.runs.push_back({wire::RecordType::kZeroRun, z->block_id, z->first_page, z->count, ""});
      }
      if (auto* e = std::get_if<wire::EndOfStream>(&(*r)->body)) out.end_pages = e->page_count;
      auto* run = std::get_if<wire::PageRun>(&(*r)->body);
      if (run == nullptr) continue;
      Seen seen{wire::RecordType::kPageRun, run->block_id, run->first_page, run->pages.size(), ""};
      const Mapping* m = nullptr;
      for (const auto& [mm, id] : blocks) {
        if (id == run->block_id) m = mm;
      }
      REQUIRE(m != nullptr);
      for (size_t i = 0; i < run->pages.size(); ++i) {
        const wire::PageEntry& e = run->pages[i];
        const uint8_t* want = m->p + (run->first_page + i) * kPage;
        const uint8_t* got = e.data.data();
        switch (e.encoding) {
          case wire::PageEncoding::kRaw:
            seen.encodings += "R";
            break;
          case wire::PageEncoding::kZlib:
            seen.encodings += "C";
            REQUIRE((*inflater)->DecompressExact(got, e.data.size(), page.data(), kPage).ok());
            got = page.data();
            break;
          default:
            seen.encodings += "Z";
            continue;
        }
        CHECK_MESSAGE(std::memcmp(got, want, kPage) == 0, "block ", run->block_id, " page ",
                      run->first_page + i);
      }
      out.runs.push_back(seen);
    }
  }
  CHECK(reader.Finish().ok());
  return out;
}

using T = wire::RecordType;

TEST_CASE("zero stretches become zero_run records where that is smaller, mixed with page runs") {
  // Block 1: two 1024-page chunks. Data at 0, 1, 10, 13, 18; zero stretches of 8 (inside: a
  // zero run), 2 and 4 (inside: inline, 24 and 48 bytes <= 56), 1005 (to the chunk's end), and
  // a whole chunk of 1024.
  Mapping a(2048);
  for (size_t i : {0, 1, 10, 13, 18}) a.Fill(i, 1);
  // Block 2: two zero pages before a data page stay inline (24 bytes <= 28 at the run's start).
  Mapping b(3);
  b.Fill(2, 2);
  // Block 3: one zero page and nothing else: a zero run (28 bytes, not a 40-byte page run).
  Mapping c(1);
  // Block 4: a zero page every third page among data, across the staging slices.
  Mapping d(1024);
  for (size_t i = 0; i < d.pages; ++i) {
    if (i % 3 != 0) d.Fill(i, 4);
  }
  // Block 5: five zero pages between data pages: 60 > 56, a zero run splits the page run.
  Mapping e(7);
  e.Fill(0, 5);
  e.Fill(6, 5);
  // Block 6: data only, read in slices that grow (no zero page) up to the chunk's end.
  Mapping f(1500);
  for (size_t i = 0; i < f.pages; ++i) f.Fill(i, 6);

  Sent s = SendAndRead({{&a, 1}, {&b, 2}, {&c, 3}, {&d, 4}, {&e, 5}, {&f, 6}}, /*zero_runs=*/true);
  CHECK((s.features & wire::kFeatureZeroRun) != 0);
  std::vector<Seen> want = {
      {T::kPageRun, 1, 0, 2, "RR"},         {T::kZeroRun, 1, 2, 8, ""},
      {T::kPageRun, 1, 10, 9, "RZZRZZZZR"}, {T::kZeroRun, 1, 19, 1005, ""},
      {T::kZeroRun, 1, 1024, 1024, ""},     {T::kPageRun, 2, 0, 3, "ZZR"},
      {T::kZeroRun, 3, 0, 1, ""},
  };
  std::string d_enc;
  for (size_t i = 0; i < 1024; ++i) d_enc += i % 3 == 0 ? "Z" : "R";
  want.push_back({T::kPageRun, 4, 0, 1024, d_enc});
  want.push_back({T::kPageRun, 5, 0, 1, "R"});
  want.push_back({T::kZeroRun, 5, 1, 5, ""});
  want.push_back({T::kPageRun, 5, 6, 1, "R"});
  want.push_back({T::kPageRun, 6, 0, 1024, std::string(1024, 'R')});
  want.push_back({T::kPageRun, 6, 1024, 476, std::string(476, 'R')});
  CHECK_MESSAGE(s.runs == want, Describe(s.runs));

  const uint64_t data_pages = 5 + 1 + 682 + 2 + 1500;
  const uint64_t all_pages = 2048 + 3 + 1 + 1024 + 7 + 1500;
  CHECK(s.counters.normal_pages == data_pages);
  CHECK(s.counters.zero_pages == all_pages - data_pages);
  CHECK(s.counters.zero_run_pages == 8 + 1005 + 1024 + 1 + 5);
  CHECK(s.counters.pages == all_pages);
  CHECK(s.end_pages == all_pages);

  // The frozen copy's way (no in-place look) sends exactly the same stream.
  Sent frozen = SendAndRead({{&a, 1}, {&b, 2}, {&c, 3}, {&d, 4}, {&e, 5}, {&f, 6}},
                            /*zero_runs=*/true, /*live=*/false);
  CHECK_MESSAGE(frozen.runs == want, Describe(frozen.runs));
  CHECK(frozen.bytes == s.bytes);
  CHECK(frozen.counters.zero_pages == s.counters.zero_pages);

  // Without zero runs: every zero page is a descriptor, one page run per chunk.
  Sent plain =
      SendAndRead({{&a, 1}, {&b, 2}, {&c, 3}, {&d, 4}, {&e, 5}, {&f, 6}}, /*zero_runs=*/false);
  CHECK((plain.features & wire::kFeatureZeroRun) == 0);
  for (const Seen& r : plain.runs) CHECK(r.type == T::kPageRun);
  CHECK(plain.runs.size() == 8);
  CHECK(plain.counters.zero_run_pages == 0);
  CHECK(plain.counters.zero_pages == s.counters.zero_pages);
  CHECK(plain.end_pages == all_pages);
  // The zero runs save the 12-byte descriptors of the 2043 pages they cover and cost 5 records
  // of 28 bytes. Page runs: the two interior zero runs split one off each (block 1's first
  // chunk, block 5), and two page runs are not needed (block 1's second chunk, block 3).
  CHECK(plain.bytes - s.bytes == 2043 * 12 - 5 * 28 + 2 * 28 - 2 * 28);
}

TEST_CASE("a block of nothing but zero pages: one zero run per 1024-page chunk") {
  Mapping z(4096 + 10);
  Sent s = SendAndRead({{&z, 7}}, /*zero_runs=*/true);
  std::vector<Seen> want = {{T::kZeroRun, 7, 0, 1024, ""},
                            {T::kZeroRun, 7, 1024, 1024, ""},
                            {T::kZeroRun, 7, 2048, 1024, ""},
                            {T::kZeroRun, 7, 3072, 1024, ""},
                            {T::kZeroRun, 7, 4096, 10, ""}};
  CHECK_MESSAGE(s.runs == want, Describe(s.runs));
  CHECK(s.counters.normal_pages == 0);
  CHECK(s.counters.zero_pages == 4106);
  CHECK(s.counters.zero_run_pages == 4106);
}

TEST_CASE("memory that became unreadable under the sender ends the block there, live or not") {
  // Zero pages up to a page the program made unreadable (as if unmapped meanwhile), data after
  // it: the in-place look faults there (recovered, the test goes on), the copy reads up to it,
  // and the block is reported for a full send again.
  Mapping m(64);
  std::memset(m.p, 0, 64 * kPage);
  m.Fill(40, 3);
  REQUIRE(mprotect(m.p + 20 * kPage, kPage, PROT_NONE) == 0);
  for (bool live : {true, false}) {
    CAPTURE(live);
    const uint64_t faults_before = ScanWindow::recovered_faults();
    Sent s = SendAndRead({{&m, 9}}, /*zero_runs=*/true, live);
    std::vector<Seen> want = {{T::kZeroRun, 9, 0, 20, ""}};
    CHECK_MESSAGE(s.runs == want, Describe(s.runs));
    CHECK(s.fault_blocks == std::vector<uint32_t>{9});
    CHECK(s.counters.zero_pages == 20);
    CHECK(ScanWindow::recovered_faults() == faults_before + (live ? 1 : 0));
  }
  REQUIRE(mprotect(m.p + 20 * kPage, kPage, PROT_READ | PROT_WRITE) == 0);
}

TEST_CASE("zlib takes every page while the link is busy and none while it would wait") {
  // 300 compressible pages (a pattern repeating every 256 bytes) and 8 zero pages, sent live
  // (the pool) and as the frozen copy (inline); the stream is read back and every page checked.
  Mapping m(308);
  for (size_t i = 0; i < 300; ++i) m.Fill(i, 5);
  const std::string data(300, 'C');
  auto run_of = [](const std::string& enc) {
    return std::vector<Seen>{{T::kPageRun, 3, 0, 300, enc}, {T::kZeroRun, 3, 300, 8, ""}};
  };
  for (bool live : {true, false}) {
    CAPTURE(live);
    // Busy: 3 MiB waiting in a 4 MiB buffer.
    Zlib busy;
    busy.queue = [] { return std::optional<Channel::SendQueue>({3u << 20, 4u << 20}); };
    Sent b = SendAndRead({{&m, 3}}, true, live, &busy);
    CHECK_MESSAGE(b.runs == run_of(data), Describe(b.runs));
    CHECK(b.counters.compressed_pages == 300);
    CHECK(b.counters.compress_skipped_pages == 0);
    CHECK(b.counters.normal_pages == 0);

    // Dry (nothing queued, nothing in the batch): the pages go raw, none waits for zlib.
    Zlib dry;
    dry.queue = [] { return std::optional<Channel::SendQueue>({0, 4u << 20}); };
    Sent d = SendAndRead({{&m, 3}}, true, live, &dry);
    CHECK_MESSAGE(d.runs == run_of(std::string(300, 'R')), Describe(d.runs));
    CHECK(d.counters.compressed_pages == 0);
    CHECK(d.counters.compress_skipped_pages == 300);
    CHECK(d.counters.normal_pages == 300);
    CHECK(d.bytes > b.bytes + 300 * (kPage - 1024));

    // Just under a quarter of the buffer is dry; a quarter is busy.
    Zlib edge;
    edge.queue = [] { return std::optional<Channel::SendQueue>({(1u << 20) - 1, 4u << 20}); };
    CHECK(SendAndRead({{&m, 3}}, true, live, &edge).counters.compressed_pages == 0);
    edge.queue = [] { return std::optional<Channel::SendQueue>({1u << 20, 4u << 20}); };
    CHECK(SendAndRead({{&m, 3}}, true, live, &edge).counters.compressed_pages == 300);

    // Busy for the first 100 asks, then dry: the run is compressed up to where the link ran
    // low (each page is asked about once, in order, before it is compressed) and raw after.
    Zlib turns;
    int asked = 0;
    turns.queue = [&asked] {
      return std::optional<Channel::SendQueue>({++asked <= 100 ? 3u << 20 : 0u, 4u << 20});
    };
    Sent t = SendAndRead({{&m, 3}}, true, live, &turns);
    CHECK_MESSAGE(t.runs == run_of(std::string(100, 'C') + std::string(200, 'R')),
                  Describe(t.runs));
    CHECK(t.counters.compress_skipped_pages == 200);
    CHECK(asked == 101);

    // compress_always, or a channel that cannot say: every page is compressed however dry.
    Zlib always = dry;
    always.adaptive = false;
    CHECK(SendAndRead({{&m, 3}}, true, live, &always).runs == run_of(data));
    Zlib unknown;
    CHECK(SendAndRead({{&m, 3}}, true, live, &unknown).runs == run_of(data));
  }
}

TEST_CASE("a dry link is given what the batch holds before any page goes raw") {
  // Block 1: 20 pages of noise, sent while the link is busy: zlib cannot shrink them, so they
  // wait in the batch raw, 80 KiB. Then the link reports dry. The first page of block 2 finds
  // the batch over 64 KiB: it is written and that page is compressed after all; at the next
  // page the batch is empty and the link still dry, so the rest of the run goes raw.
  Mapping noise(20), pattern(10);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t k = 0; k < noise.pages * kPage / 8; ++k) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(noise.p + 8 * k, &x, 8);
  }
  for (size_t i = 0; i < pattern.pages; ++i) pattern.Fill(i, 9);
  for (bool live : {true, false}) {
    CAPTURE(live);
    int asked = 0;
    Zlib z;
    z.queue = [&asked] {
      return std::optional<Channel::SendQueue>({++asked <= 20 ? 3u << 20 : 0u, 4u << 20});
    };
    Sent s = SendAndRead({{&noise, 1}, {&pattern, 2}}, true, live, &z);
    const std::vector<Seen> want = {{T::kPageRun, 1, 0, 20, std::string(20, 'R')},
                                    {T::kPageRun, 2, 0, 10, "C" + std::string(9, 'R')}};
    CHECK_MESSAGE(s.runs == want, Describe(s.runs));
    CHECK(asked == 22);
    CHECK(s.counters.compressed_pages == 1);
    CHECK(s.counters.compress_skipped_pages == 9);
    CHECK(s.counters.normal_pages == 29);
  }
}

// True when every page of [start, end) is mapped in this process (mincore fails with ENOMEM on
// any unmapped page).
bool Mapped(uintptr_t start, uintptr_t end) {
  unsigned char v[64];
  for (uintptr_t a = start; a < end; a += kPage) {
    if (mincore(reinterpret_cast<void*>(a), kPage, v) != 0) return false;
  }
  return true;
}

bool AnyPageMapped(uintptr_t start, uintptr_t end) {
  for (uintptr_t a = start; a < end; a += kPage) {
    if (Mapped(a, a + kPage)) return true;
  }
  return false;
}

TEST_CASE(
    "a block's crc table is unmapped when the block is resized, removed, or the sender ends") {
  auto pair = Pipe();
  PageSenderConfig c = TestConfig();
  Mapping m(3 * 1024);  // tables of 1, 2 and 3 pages (4 bytes a page)
  RamBlock b = m.Block(1);
  b.length = 1024 * kPage;
  std::pair<uintptr_t, uintptr_t> first, second, other;
  {
    auto sender = PageSender::Create(c, pair.first.get());
    REQUIRE_MESSAGE(sender.ok(), sender.status().ToString());
    PageSender& s = **sender;
    REQUIRE(s.AddBlock(b).ok());
    first = s.CrcTableRange(1);
    REQUIRE(first.second - first.first == kPage);
    CHECK(Mapped(first.first, first.second));

    b.length = 2 * 1024 * kPage;
    REQUIRE(s.ResizeBlock(b).ok());
    second = s.CrcTableRange(1);
    REQUIRE(second.second - second.first == 2 * kPage);
    CHECK(Mapped(second.first, second.second));
    // The old table's pages outside the new one (which may reuse its address) are gone.
    for (uintptr_t a = first.first; a < first.second; a += kPage) {
      if (a >= second.first && a < second.second) continue;
      CHECK_FALSE(AnyPageMapped(a, a + kPage));
    }

    RamBlock o = m.Block(2);
    o.start += 2 * 1024 * kPage;
    o.length = 1024 * kPage;
    REQUIRE(s.AddBlock(o).ok());
    other = s.CrcTableRange(2);
    REQUIRE(other.second > other.first);

    REQUIRE(s.RemoveBlock(1).ok());
    CHECK(s.CrcTableRange(1) == std::pair<uintptr_t, uintptr_t>(0, 0));
    // Both of block 1's tables are reported dropped, once, for the caller's exclusions.
    CHECK(s.TakeDroppedTables() == std::vector<std::pair<uintptr_t, uintptr_t>>{first, second});
    CHECK(s.TakeDroppedTables().empty());
    CHECK_FALSE(AnyPageMapped(second.first, second.second));
    CHECK(Mapped(other.first, other.second));  // another block's table stays
  }
  CHECK_FALSE(AnyPageMapped(other.first, other.second));  // the sender's end took the rest
}

// A channel that waits before each write goes through to `inner`: the batch on its way stays
// in use long after Flush() hands it over, so a sender that refilled its buffers too early
// would put the new bytes into the old batch. Records the threads that wrote, and fails every
// write from the `fail_at`-th on (0: never).
class SlowChannel : public ForwardingChannel {
 public:
  SlowChannel(Channel* inner, int fail_at = 0)
      : ForwardingChannel("slow " + inner->name(), inner), fail_at_(fail_at) {}
  absl::Status WriteV(const iovec* iov, size_t n) override {
    const timespec pause{0, 2'000'000};
    nanosleep(&pause, nullptr);
    {
      std::lock_guard<std::mutex> l(mu_);
      writers_.insert(static_cast<pid_t>(syscall(SYS_gettid)));
      if (fail_at_ != 0 && ++writes_ >= fail_at_) {
        return absl::UnavailableError("slow channel: the peer went away");
      }
    }
    return ForwardingChannel::WriteV(iov, n);
  }
  std::string_view kind() const override { return "slow"; }
  std::set<pid_t> writers() {
    std::lock_guard<std::mutex> l(mu_);
    return writers_;
  }

 private:
  const int fail_at_;
  std::mutex mu_;
  std::set<pid_t> writers_;
  int writes_ = 0;
};

struct ChannelBytes {
  std::vector<std::vector<uint8_t>> streams;  // each channel's bytes, in order
  std::vector<std::set<pid_t>> writers;       // the threads that wrote each
  std::vector<pid_t> own_threads;             // OwnThreads() before Quiesce()
  PageSenderCounters counters;
};

// Sends the blocks twice over (a second iteration with changed pages) on `channels` channels
// with small batches (many flushes, both halves of the staging area in turn), ends the stream
// and returns every channel's bytes.
ChannelBytes SendOnChannels(const std::vector<std::pair<Mapping*, uint32_t>>& blocks,
                            size_t channels, bool flush_threads, int xbzrle_or_zlib) {
  std::vector<std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>>> pairs;
  std::vector<std::unique_ptr<SlowChannel>> slow;
  std::vector<Channel*> out;
  for (size_t i = 0; i < channels; ++i) {
    pairs.push_back(Pipe());
    slow.push_back(std::make_unique<SlowChannel>(pairs.back().first.get()));
    out.push_back(slow.back().get());
  }
  PageSenderConfig c = TestConfig();
  c.flush_bytes = 96u << 10;
  c.flush_threads = flush_threads;
  if (xbzrle_or_zlib == 1) c.xbzrle = true;
  if (xbzrle_or_zlib == 2) {
    c.compress_level = 1;
    c.compress_adaptive = false;
  }
  ChannelBytes r;
  {
    auto sender = PageSender::Create(c, out);
    REQUIRE_MESSAGE(sender.ok(), sender.status().ToString());
    PageSender& s = **sender;
    auto tids = s.OwnThreads();
    r.own_threads.assign(tids.begin(), tids.end());
    for (const auto& [m, id] : blocks) REQUIRE(s.AddBlock(m->Block(id)).ok());
    for (int iteration = 0; iteration < 2; ++iteration) {
      for (const auto& [m, id] : blocks) {
        REQUIRE(s.SendPages(m->Block(id), 0, m->pages, /*live=*/true).ok());
      }
      REQUIRE(s.EndIteration(iteration, 0, 0, /*final=*/iteration == 1).ok());
      // Between iterations the program changes every fifth page.
      for (const auto& [m, id] : blocks) {
        for (size_t i = 0; i < m->pages; i += 5) m->Fill(i, static_cast<uint8_t>(40 + iteration));
      }
    }
    REQUIRE(s.AddEndOfStream(false).ok());
    REQUIRE(s.Flush().ok());
    REQUIRE(s.Quiesce().ok());
    CHECK(s.OwnThreads().empty());  // flush and compressing threads alike
    r.counters = s.counters();
  }
  for (size_t i = 0; i < channels; ++i) {
    REQUIRE(pairs[i].first->Shutdown().ok());
    std::vector<uint8_t> bytes;
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      auto n = pairs[i].second->ReadSome(buf.data(), buf.size());
      REQUIRE_MESSAGE(n.ok(), n.status().ToString());
      if (*n == 0) break;
      bytes.insert(bytes.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
    }
    r.streams.push_back(std::move(bytes));
    r.writers.push_back(slow[i]->writers());
  }
  return r;
}

TEST_CASE("flush threads write exactly the streams the sender thread would, channel by channel") {
  // Random-looking pages with zero stretches among them, in three blocks.
  Mapping a(700), b(64), z(300);
  for (size_t i = 0; i < a.pages; ++i) {
    if (i % 11 != 3 && (i < 200 || i > 260)) a.Fill(i, 1);
  }
  for (size_t i = 0; i < b.pages; ++i) b.Fill(i, 2);
  z.Fill(150, 3);
  for (int codec = 0; codec < 3; ++codec) {
    for (size_t channels : {size_t{1}, size_t{2}}) {
      CAPTURE(codec);
      CAPTURE(channels);
      // The same memory for both: refill what the first send's second iteration changed.
      auto reset = [&] {
        for (size_t i = 0; i < a.pages; i += 5) {
          const bool data = i % 11 != 3 && (i < 200 || i > 260);
          if (data) a.Fill(i, 1);
          if (!data) std::memset(a.p + i * kPage, 0, kPage);
        }
        for (size_t i = 0; i < b.pages; i += 5) b.Fill(i, 2);
        for (size_t i = 0; i < z.pages; i += 5) std::memset(z.p + i * kPage, 0, kPage);
        z.Fill(150, 3);
      };
      reset();
      ChannelBytes sync = SendOnChannels({{&a, 1}, {&b, 2}, {&z, 3}}, channels, false, codec);
      reset();
      ChannelBytes async = SendOnChannels({{&a, 1}, {&b, 2}, {&z, 3}}, channels, true, codec);
      REQUIRE(async.streams.size() == channels);
      for (size_t i = 0; i < channels; ++i) {
        CHECK(async.streams[i].size() == sync.streams[i].size());
        CHECK_MESSAGE(async.streams[i] == sync.streams[i], "channel ", i);
        // Channel i was written by its own flush thread only; the sender thread, without them.
        REQUIRE(async.writers[i].size() == 1);
        const pid_t flusher = *async.writers[i].begin();
        CHECK(std::find(async.own_threads.begin(), async.own_threads.end(), flusher) !=
              async.own_threads.end());
        CHECK(sync.writers[i] == std::set<pid_t>{static_cast<pid_t>(syscall(SYS_gettid))});
      }
      CHECK(async.counters.pages == sync.counters.pages);
      CHECK(async.counters.bytes_out == sync.counters.bytes_out);
      // Every page of both iterations, and the end of stream, on the wire.
      CHECK(async.counters.pages == 2 * (700 + 64 + 300));
      // The stream decodes (channel 0 carries the block records).
      if (channels == 1) {
        wire::StreamReader reader;
        REQUIRE(reader.Feed(async.streams[0]).ok());
        for (;;) {
          auto rec = reader.Next();
          REQUIRE_MESSAGE(rec.ok(), rec.status().ToString());
          if (*rec == nullptr) break;
        }
        CHECK(reader.Finish().ok());
      }
    }
  }
}

TEST_CASE("a write that fails on a flush thread fails a later Flush, and Quiesce, with its error") {
  auto pair = Pipe();
  SlowChannel failing(pair.first.get(), /*fail_at=*/2);
  PageSenderConfig c = TestConfig();
  c.flush_bytes = 64u << 10;
  c.flush_threads = true;
  auto sender = PageSender::Create(c, &failing);
  REQUIRE_MESSAGE(sender.ok(), sender.status().ToString());
  PageSender& s = **sender;
  Mapping m(256);
  for (size_t i = 0; i < m.pages; ++i) m.Fill(i, 9);
  REQUIRE(s.AddBlock(m.Block(1)).ok());
  // 1 MiB in 64 KiB batches (runs of 16 pages): the second write fails on the flush thread, and
  // a later flush (or the Quiesce) reports it.
  absl::Status sent;
  for (size_t p = 0; p < m.pages && sent.ok(); p += 16) {
    sent = s.SendPages(m.Block(1), p, 16, /*live=*/true);
  }
  absl::Status flushed = sent.ok() ? s.Flush() : sent;
  absl::Status quiesced = s.Quiesce();
  const absl::Status& first = flushed.ok() ? quiesced : flushed;
  CHECK(first.code() == absl::StatusCode::kUnavailable);
  CHECK(first.message() == "slow channel: the peer went away");
  CHECK(quiesced.code() == absl::StatusCode::kUnavailable);  // sticky
  CHECK(s.OwnThreads().empty());
  // From now on the sender thread writes itself: what the failed flushes left in the batch
  // goes out (and fails) on this thread.
  REQUIRE(s.AddEndOfStream(true).ok());
  CHECK(s.Flush().code() == absl::StatusCode::kUnavailable);
  CHECK(failing.writers().count(static_cast<pid_t>(syscall(SYS_gettid))) == 1);
  CHECK(failing.writers().size() == 2);
}

TEST_CASE("after Quiesce the sender thread writes and compresses itself; live runs go on") {
  auto pair = Pipe();
  PageSenderConfig c = TestConfig();
  c.flush_threads = true;
  c.compress_level = 1;
  c.compress_threads = 2;
  c.compress_adaptive = false;
  auto sender = PageSender::Create(c, pair.first.get());
  REQUIRE_MESSAGE(sender.ok(), sender.status().ToString());
  PageSender& s = **sender;
  CHECK(s.OwnThreads().size() == 3);  // two compressing threads, one flush thread
  Mapping m(512);
  for (size_t i = 0; i < m.pages; ++i) m.Fill(i, 5);
  REQUIRE(s.AddBlock(m.Block(1)).ok());
  REQUIRE(s.SendPages(m.Block(1), 0, 256, /*live=*/true).ok());
  REQUIRE(s.Flush().ok());
  REQUIRE(s.Quiesce().ok());
  CHECK(s.OwnThreads().empty());
  // As after an abandoned stop: live runs again, compressed on this thread.
  REQUIRE(s.SendPages(m.Block(1), 256, 256, /*live=*/true).ok());
  REQUIRE(s.EndIteration(0, 0, 0, /*final=*/true).ok());
  REQUIRE(s.AddEndOfStream(false).ok());
  REQUIRE(s.Flush().ok());
  CHECK(s.counters().compressed_pages == 512);
  REQUIRE(pair.first->Shutdown().ok());
  auto inflater = ZlibDecompressor::Create();
  REQUIRE(inflater.ok());
  wire::StreamReader reader;
  std::vector<uint8_t> buf(1 << 20), page(kPage);
  uint64_t checked = 0;
  while (!reader.ended()) {
    auto n = pair.second->ReadSome(buf.data(), buf.size());
    REQUIRE(n.ok());
    REQUIRE(*n > 0);
    REQUIRE(reader.Feed({buf.data(), *n}).ok());
    for (;;) {
      auto r = reader.Next();
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      if (*r == nullptr) break;
      auto* run = std::get_if<wire::PageRun>(&(*r)->body);
      if (run == nullptr) continue;
      for (size_t i = 0; i < run->pages.size(); ++i) {
        const wire::PageEntry& e = run->pages[i];
        REQUIRE(e.encoding == wire::PageEncoding::kZlib);
        REQUIRE(
            (*inflater)->DecompressExact(e.data.data(), e.data.size(), page.data(), kPage).ok());
        CHECK(std::memcmp(page.data(), m.p + (run->first_page + i) * kPage, kPage) == 0);
        ++checked;
      }
    }
  }
  CHECK(checked == 512);
  CHECK(reader.Finish().ok());
}

}  // namespace
}  // namespace procmig
