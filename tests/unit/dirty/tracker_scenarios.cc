#include "unit/dirty/tracker_scenarios.h"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dirty/block_list.h"
#include "dirty/tracker_probe.h"
#include "unit/dirty/scenario_support.h"

namespace procmig::testing {

void RequireBackend(TrackerKind kind) {
  static int checked = 0;
  if (checked++ != 0) return;
  TrackerProbeResult r = ProbeTracker(kind, TrackerConfig{});
  std::printf("[%s] probe: %s: %s\n", std::string(TrackerKindName(kind)).c_str(),
              r.available ? "ok" : "unavailable", r.reason.c_str());
  std::fflush(stdout);
  if (!r.available) {
    std::printf("SKIP: %s is unavailable on this kernel\n",
                std::string(TrackerKindName(kind)).c_str());
    std::fflush(stdout);
    std::exit(77);
  }
}

void RunRandomWrites(TrackerKind kind) {
  const size_t sizes[] = {64, 257, 1000};
  std::vector<std::unique_ptr<Region>> regions;
  std::vector<Truth> truths;
  std::vector<RamBlock> blocks;
  for (size_t i = 0; i < 3; ++i) {
    regions.push_back(std::make_unique<Region>(sizes[i] * Page()));
    // Even pages touched before tracking, odd pages never.
    for (size_t p = 0; p < sizes[i]; p += 2) regions[i]->base()[p * Page()] = 1;
    blocks.push_back(
        MakeBlock(static_cast<uint32_t>(10 + i), regions[i]->base(), regions[i]->len()));
    truths.emplace_back(blocks.back());
  }
  auto tracker = Started(kind, blocks);
  std::vector<Truth*> all;
  for (Truth& t : truths) all.push_back(&t);
  Totals totals;
  Check(SyncOk(*tracker), all, totals, "reset", 0);
  std::mt19937 rng(20261126);
  for (int round = 1; round <= 12; ++round) {
    const bool idle = round == 3 || round == 7;
    for (Truth& t : truths) {
      size_t n = idle ? 0 : rng() % (t.written.size() / 4 + 1);
      for (size_t i = 0; i < n; ++i) t.Write(rng() % t.written.size(), static_cast<uint8_t>(round));
    }
    Check(SyncOk(*tracker), all, totals, "random", round);
  }
  REQUIRE_OK(tracker->Stop());
  Print(kind, "random writes (3 blocks, half never touched before tracking, 12 rounds)", totals);
}

void RunDontneedRewrite(TrackerKind kind) {
  const size_t pages = 256;
  Region r(pages * Page());
  memset(r.base(), 0x11, r.len());
  Truth t(MakeBlock(20, r.base(), r.len()));
  auto tracker = Started(kind, {&t.block, 1});
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);

  REQUIRE(madvise(r.base() + 32 * Page(), 64 * Page(), MADV_DONTNEED) == 0);
  for (size_t p = 40; p < 50; ++p) t.Write(p);
  t.Write(90);
  t.Write(200);
  const DirtySet& s1 = SyncOk(*tracker);
  size_t zapped_reported = 0;  // dropped and not written again: content changed to zeros
  for (size_t p = 32; p < 96; ++p) {
    if (!t.written[p] && s1.Find(20)->pages.Test(p)) ++zapped_reported;
  }
  Check(s1, {&t}, totals, "dontneed", 1);
  t.Write(60);  // dropped in round 1, first written now
  Check(SyncOk(*tracker), {&t}, totals, "dontneed", 2);
  REQUIRE(madvise(r.base(), r.len(), MADV_DONTNEED) == 0);
  t.Write(0);
  t.Write(255);
  Check(SyncOk(*tracker), {&t}, totals, "dontneed", 3);
  for (size_t p = 100; p < 110; ++p) t.Write(p);
  Check(SyncOk(*tracker), {&t}, totals, "dontneed", 4);
  REQUIRE_OK(tracker->Stop());
  Print(kind, "MADV_DONTNEED then written again", totals,
        ", " + std::to_string(zapped_reported) + "/53 dropped-but-unwritten pages reported");
}

void RunWriteXorExecute(TrackerKind kind) {
  // A JIT's code region: read-only and executable when tracking starts (its pages written
  // before), then, between two syncs, a few pages made writable, written and made read-only and
  // executable again: the layout reads the same at both syncs, the pages must be reported.
  const size_t pages = 64;
  Region r(pages * Page());
  memset(r.base(), 0xc3, r.len());
  REQUIRE(mprotect(r.base(), r.len(), PROT_READ | PROT_EXEC) == 0);
  Truth t(MakeBlock(30, r.base(), r.len()));
  t.block.prot = PROT_READ | PROT_EXEC;
  auto tracker = Started(kind, {&t.block, 1});
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
  for (int round = 1; round <= 3; ++round) {
    const size_t first = static_cast<size_t>(round) * 10;
    REQUIRE(mprotect(r.base() + first * Page(), 4 * Page(), PROT_READ | PROT_WRITE) == 0);
    for (size_t p = first; p < first + 4; ++p) t.Write(p, static_cast<uint8_t>(round));
    REQUIRE(mprotect(r.base() + first * Page(), 4 * Page(), PROT_READ | PROT_EXEC) == 0);
    Check(SyncOk(*tracker), {&t}, totals, "write-xor-execute", round);
  }
  Check(SyncOk(*tracker), {&t}, totals, "idle", 4);
  REQUIRE_OK(tracker->Stop());
  Print(kind, "a read-only block made writable, written, read-only again between syncs", totals);
}

void RunMarkDiscarded(TrackerKind kind) {
  const size_t pages = 64;
  Region r(pages * Page());
  memset(r.base(), 0x55, r.len());
  Truth t(MakeBlock(25, r.base(), r.len()));
  auto tracker = Started(kind, {&t.block, 1});
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
  // What the agent's madvise interposer does after the real call.
  REQUIRE(madvise(r.base() + 10 * Page(), 10 * Page(), MADV_DONTNEED) == 0);
  tracker->MarkDiscarded(reinterpret_cast<uintptr_t>(r.base()) + 10 * Page(), 10 * Page());
  for (size_t p = 10; p < 20; ++p) t.written[p] = 1;  // their content changed to zeros
  t.Write(40);
  Check(SyncOk(*tracker), {&t}, totals, "discard", 1);
  // Reported once, not forever; a range partly outside the block is clipped.
  tracker->MarkDiscarded(reinterpret_cast<uintptr_t>(r.base()) + 60 * Page(), 100 * Page());
  for (size_t p = 60; p < 64; ++p) t.written[p] = 1;
  const DirtySet& s2 = SyncOk(*tracker);
  if (kind != TrackerKind::kFull) CHECK(!s2.Find(25)->pages.Test(15));
  Check(s2, {&t}, totals, "discard", 2);
  REQUIRE_OK(tracker->Stop());
  Print(kind, "discarded pages announced with MarkDiscarded", totals);
}

void RunMremapGrow(TrackerKind kind) {
  const size_t small = 64;
  const size_t big = 160;
  Totals totals;
  for (int move = 0; move <= 1; ++move) {
    // In place: reserve the big range and unmap its tail. Moved: MREMAP_FIXED to another range.
    Region r(big * Page());
    REQUIRE(munmap(r.base() + small * Page(), (big - small) * Page()) == 0);
    Region target(big * Page());
    memset(r.base(), 0x22, small * Page());
    Truth t(MakeBlock(30, r.base(), small * Page()));
    auto tracker = Started(kind, {&t.block, 1});
    Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
    t.Write(3);
    t.Write(63);
    Check(SyncOk(*tracker), {&t}, totals, "before mremap", 1);
    t.Write(10);  // written before the grow, reported by the sync after it

    // What the agent's mremap interposer does first: under the mprotect backend the range is
    // split into VMAs of different protections, which mremap refuses (EFAULT); Prepare makes it
    // one writable VMA again and marks it dirty. The other backends ignore the call.
    REQUIRE_OK(tracker->PrepareKernelWrite(t.block.start, t.block.length));
    tracker->FinishKernelWrite(t.block.start, t.block.length);
    void* grown = move ? mremap(r.base(), small * Page(), big * Page(),
                                MREMAP_MAYMOVE | MREMAP_FIXED, target.base())
                       : mremap(r.base(), small * Page(), big * Page(), 0);
    REQUIRE(grown != MAP_FAILED);
    if (move) {
      target.Reset(nullptr, 0);  // now owned by r
      r.Reset(static_cast<char*>(grown), big * Page());
    } else {
      REQUIRE(grown == r.base());
      r.Reset(r.base(), big * Page());
    }
    uint32_t id = 30;
    REQUIRE_OK(tracker->RemoveBlocks({&id, 1}));
    Truth grown_truth(MakeBlock(30, r.base(), r.len()));
    REQUIRE_OK(tracker->AddBlocks({&grown_truth.block, 1}));
    grown_truth.Write(10);
    grown_truth.Write(64);   // first page of the new tail
    grown_truth.Write(159);  // last page
    grown_truth.Write(5);
    Check(SyncOk(*tracker), {&grown_truth}, totals, move ? "moved" : "in place", 2);
    for (size_t p = 60; p < 70; ++p) grown_truth.Write(p);
    Check(SyncOk(*tracker), {&grown_truth}, totals, move ? "moved" : "in place", 3);
    REQUIRE_OK(tracker->Stop());
  }
  Print(kind, "region grown with mremap (in place and moved)", totals);
}

void RunTransparentHugePages(TrackerKind kind) {
  const size_t huge = size_t{2} << 20;
  Region r(4 * huge, huge);
  REQUIRE(madvise(r.base(), r.len(), MADV_HUGEPAGE) == 0);
  memset(r.base(), 0x33, r.len());
  const size_t thp_before = AnonHugeKb(r.base());
  INFO("AnonHugePages of the region before tracking: ", thp_before, " kB");
  CHECK(thp_before > 0);  // the scenario is meaningless without huge pages
  Truth t(MakeBlock(40, r.base(), r.len()));
  auto tracker = Started(kind, {&t.block, 1});
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
  const size_t per_huge = huge / Page();
  t.Write(1);
  t.Write(per_huge + 7);
  t.Write(per_huge + 300);
  Check(SyncOk(*tracker), {&t}, totals, "thp", 1);
  Check(SyncOk(*tracker), {&t}, totals, "thp idle", 2);
  std::mt19937 rng(7);
  for (int round = 3; round < 8; ++round) {
    for (int i = 0; i < 20; ++i) t.Write(rng() % t.written.size());
    Check(SyncOk(*tracker), {&t}, totals, "thp", round);
  }
  // A huge page that appears while tracked: drop the first 2 MiB (the kernel may free its page
  // table) and write one byte; a fresh huge page may back it, reported whole.
  REQUIRE(madvise(r.base(), huge, MADV_DONTNEED) == 0);
  t.Write(3);
  Check(SyncOk(*tracker), {&t}, totals, "thp refault", 8);
  t.Write(per_huge - 1);
  Check(SyncOk(*tracker), {&t}, totals, "thp refault", 9);
  const size_t thp_after = AnonHugeKb(r.base());
  REQUIRE_OK(tracker->Stop());
  Print(kind, "THP-backed region (MADV_HUGEPAGE)", totals,
        ", AnonHugePages " + std::to_string(thp_before) + " kB before, " +
            std::to_string(thp_after) + " kB after tracking");
}

namespace {

// Pauses the writer threads between two writes (what the agent does with thread parking).
// Writers announce themselves with Enter() before their first write and Leave() after their
// last, so a Pause with no writer running returns at once.
class CooperativeQuiescer final : public WriteQuiescer {
 public:
  absl::Status Pause() override {
    pause_.store(true);
    while (paused_.load() < active_.load()) std::this_thread::yield();
    ++pauses_;
    return absl::OkStatus();
  }
  void Resume() override { pause_.store(false); }
  void Enter() {
    active_.fetch_add(1);
    Checkpoint();
  }
  // Called by writers before each write.
  void Checkpoint() {
    if (!pause_.load()) return;
    paused_.fetch_add(1);
    while (pause_.load()) std::this_thread::yield();
    paused_.fetch_sub(1);
  }
  void Leave() { active_.fetch_sub(1); }
  int pauses() const { return pauses_; }

 private:
  std::atomic<bool> pause_{false};
  std::atomic<int> paused_{0};
  std::atomic<int> active_{0};
  int pauses_ = 0;
};

}  // namespace

void RunConcurrentWriters(TrackerKind kind) {
  const size_t pages_a = 512;
  const size_t pages_b = 300;
  Region ra(pages_a * Page());
  Region rb(pages_b * Page());
  memset(ra.base(), 1, ra.len());
  std::vector<RamBlock> blocks = {MakeBlock(50, ra.base(), ra.len()),
                                  MakeBlock(51, rb.base(), rb.len())};
  const int kWriters = 3;
  // Soft-dirty needs its writers paused around read+reset; the other backends ignore this.
  CooperativeQuiescer quiescer;
  auto tracker = Started(kind, blocks, &quiescer);
  (void)SyncOk(*tracker);

  const size_t total = pages_a + pages_b;
  // Per page: the first sync number that must report its last write (0 = never written).
  std::unique_ptr<std::atomic<uint32_t>[]> must_report(new std::atomic<uint32_t>[total]);
  std::vector<uint32_t> last_reported(total, 0);
  for (size_t i = 0; i < total; ++i) must_report[i].store(0);
  std::atomic<uint32_t> done{0};     // number of the last completed sync
  std::atomic<bool> syncing{false};  // a Sync is running
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0}, writes_during_sync{0};

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 rng(100 + w);
      quiescer.Enter();
      while (!stop.load(std::memory_order_relaxed)) {
        quiescer.Checkpoint();
        size_t g = rng() % total;
        char* page = g < pages_a ? ra.base() + g * Page() : rb.base() + (g - pages_a) * Page();
        const uint32_t d = done.load();  // sync d finished before this write
        const bool during = syncing.load();
        static_cast<volatile char*>(page)[(w * 64) % Page()] = static_cast<char>(d);
        uint32_t want = d + 1;
        uint32_t cur = must_report[g].load();
        while (cur < want && !must_report[g].compare_exchange_weak(cur, want)) {
        }
        writes.fetch_add(1, std::memory_order_relaxed);
        if (during) writes_during_sync.fetch_add(1, std::memory_order_relaxed);
      }
      quiescer.Leave();
    });
  }
  auto record = [&](const DirtySet& set, uint32_t k) {
    set.ForEachRun([&](const DirtyBlock& b, PageRun run) {
      size_t base = b.id == 50 ? 0 : pages_a;
      for (size_t p = run.first; p < run.first + run.count; ++p) last_reported[base + p] = k;
    });
  };
  const uint32_t kSyncs = 40;
  for (uint32_t k = 1; k <= kSyncs; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    syncing.store(true);
    const DirtySet& set = SyncOk(*tracker);
    syncing.store(false);
    done.store(k);
    record(set, k);
  }
  stop.store(true);
  for (std::thread& t : writers) t.join();
  const DirtySet& final_set = SyncOk(*tracker);
  record(final_set, kSyncs + 1);
  size_t missed = 0, written_pages = 0;
  for (size_t g = 0; g < total; ++g) {
    uint32_t need = must_report[g].load();
    if (need == 0) continue;
    ++written_pages;
    if (last_reported[g] < need) {
      INFO("page ", g, " last written after sync ", need - 1, " but last reported by sync ",
           last_reported[g]);
      CHECK(last_reported[g] >= need);
      ++missed;
    }
  }
  CHECK(missed == 0);
  const TrackerStats stats = tracker->stats();
  REQUIRE_OK(tracker->Stop());
  std::printf("[%s] concurrent writers: %d threads, %" PRIu64 " writes (%" PRIu64
              " while Sync ran), %zu pages written, %u syncs, %" PRIu64
              " faults handled, %d pauses, "
              "0 missed\n",
              std::string(TrackerKindName(kind)).c_str(), kWriters, writes.load(),
              writes_during_sync.load(), written_pages, kSyncs + 1, stats.faults,
              quiescer.pauses());
  std::fflush(stdout);
  CHECK(writes.load() > 0);
}

void RunKernelWrite(TrackerKind kind) {
  const size_t pages = 16;
  Region r(pages * Page());
  memset(r.base(), 0x44, r.len());
  Truth t(MakeBlock(60, r.base(), r.len()));
  auto tracker = Started(kind, {&t.block, 1});
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  char payload[100];
  memset(payload, 'k', sizeof(payload));

  // A read(2) into tracked memory, announced by the interposer's hook.
  REQUIRE(write(fds[1], payload, 100) == 100);
  char* dst = r.base() + 3 * Page() + 100;
  REQUIRE_OK(tracker->PrepareKernelWrite(reinterpret_cast<uintptr_t>(dst), 100));
  CHECK(read(fds[0], dst, 100) == 100);
  tracker->FinishKernelWrite(reinterpret_cast<uintptr_t>(dst), 100);
  t.written[3] = 1;
  CHECK(dst[99] == 'k');
  Check(SyncOk(*tracker), {&t}, totals, "kernel write", 1);

  // Pinned across a sync: the kernel writes after the sync that follows Prepare.
  char* dst2 = r.base() + 9 * Page() + 10;
  REQUIRE_OK(tracker->PrepareKernelWrite(reinterpret_cast<uintptr_t>(dst2), 50));
  (void)SyncOk(*tracker);
  REQUIRE(write(fds[1], payload, 50) == 50);
  CHECK(read(fds[0], dst2, 50) == 50);
  tracker->FinishKernelWrite(reinterpret_cast<uintptr_t>(dst2), 50);
  t.written[9] = 1;
  Check(SyncOk(*tracker), {&t}, totals, "kernel write pinned over a sync", 2);

  // Without the hook.
  REQUIRE(write(fds[1], payload, 20) == 20);
  char* dst3 = r.base() + 12 * Page();
  ssize_t got = read(fds[0], dst3, 20);
  if (kind == TrackerKind::kMprotect) {
    // The documented residual risk: the page is read-only to the kernel too.
    CHECK(got == -1);
    CHECK(errno == EFAULT);
  } else {
    CHECK(got == 20);
    t.written[12] = 1;
  }
  Check(SyncOk(*tracker), {&t}, totals, "kernel write without hook", 3);
  close(fds[0]);
  close(fds[1]);
  REQUIRE_OK(tracker->Stop());
  Print(kind, "kernel writes (read from a pipe)", totals);
}

void RunBlockBookkeeping(TrackerKind kind) {
  Region ra(8 * Page()), rb(8 * Page()), rc(8 * Page());
  memset(ra.base(), 1, ra.len());
  memset(rb.base(), 1, rb.len());
  memset(rc.base(), 1, rc.len());
  Truth a(MakeBlock(1, ra.base(), ra.len()));
  Truth b(MakeBlock(2, rb.base(), rb.len()));
  Truth c(MakeBlock(3, rc.base(), rc.len()));
  RamBlock ab[] = {a.block, b.block};
  auto tracker = Started(kind, ab);
  Totals totals;
  CHECK(tracker->Start(ab).code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE_OK(tracker->AddBlocks({&c.block, 1}));
  Check(SyncOk(*tracker), {&a, &b, &c}, totals, "reset", 0);
  a.Write(1);
  b.Write(2);
  c.Write(7);
  Check(SyncOk(*tracker), {&a, &b, &c}, totals, "three blocks", 1);

  uint32_t id_b = 2;
  REQUIRE_OK(tracker->RemoveBlocks({&id_b, 1}));
  b.Write(3);  // untracked now: must not fault, hang, or be reported
  a.Write(4);
  const DirtySet& s = SyncOk(*tracker);
  CHECK(s.Find(2) == nullptr);
  CHECK(s.blocks().size() == 2);
  b.written.assign(b.written.size(), 0);
  Check(s, {&a, &c}, totals, "after remove", 2);

  uint32_t unknown = 999;
  CHECK(tracker->RemoveBlocks({&unknown, 1}).code() == absl::StatusCode::kNotFound);
  RamBlock overlap = MakeBlock(4, ra.base() + Page(), Page());
  CHECK(tracker->AddBlocks({&overlap, 1}).code() == absl::StatusCode::kInvalidArgument);
  RamBlock dup = b.block;
  dup.id = 1;
  CHECK(tracker->AddBlocks({&dup, 1}).code() == absl::StatusCode::kInvalidArgument);

  REQUIRE_OK(tracker->Stop());
  REQUIRE_OK(tracker->Stop());  // idempotent
  a.Write(5);                   // disarmed: plain memory again
  c.Write(5);
  CHECK(tracker->Sync().status().code() == absl::StatusCode::kFailedPrecondition);
  Print(kind, "add/remove blocks", totals);
}

void RunFinalSync(TrackerKind kind) {
  const size_t pages = 300;
  Region r(pages * Page());
  for (size_t p = 0; p < pages; ++p) r.base()[p * Page()] = 1;
  RamBlock block = MakeBlock(40, r.base(), r.len());
  Truth t(block);
  auto tracker = Started(kind, std::span<const RamBlock>(&block, 1));
  Totals totals;
  Check(SyncOk(*tracker), {&t}, totals, "reset", 0);
  std::vector<size_t> first = {0, 7, 8, 150, 299};
  for (size_t p : first) t.Write(p, 2);
  absl::StatusOr<const DirtySet*> final_set = tracker->SyncFinal();
  REQUIRE_OK(final_set.status());
  const DirtyBlock* fb = (*final_set)->Find(40);
  REQUIRE(fb != nullptr);
  // Exactly the written pages (no backend here reports more after a quiet reset).
  for (size_t p = 0; p < pages; ++p) {
    INFO("final sync page ", p);
    CHECK(fb->pages.Test(p) == (t.written[p] != 0));
  }
  for (size_t p = 0; p < pages; ++p) t.written[p] = 0;
  // The stop failed: the program writes more; the next Sync misses neither these pages nor,
  // where SyncFinal did not re-arm, writes to the first ones after it.
  std::vector<size_t> second = {1, 8, 200};
  for (size_t p : second) t.Write(p, 3);
  t.Write(150, 4);  // written again after the final sync
  Check(SyncOk(*tracker), {&t}, totals, "after final", 1);
  // Re-armed now: a quiet period reports nothing.
  const DirtySet& quiet = SyncOk(*tracker);
  const DirtyBlock* qb = quiet.Find(40);
  REQUIRE(qb != nullptr);
  CHECK(qb->pages.Count() == 0);
  REQUIRE_OK(tracker->Stop());
  Print(kind, "final sync (then a failed stop's writes)", totals);
}

}  // namespace procmig::testing
