// The layout race of a live migration, in one process: a "program" thread maps, writes, unmaps,
// grows, shrinks and moves (mremap), replaces (MAP_FIXED over itself), protects and discards
// regions inside an arena, while the test's "sender" loop does what the sender does: reads
// /proc/self/maps, follows it with RemoveBlocks/AddBlocks, syncs, and copies the reported pages
// (and new blocks in full) into a shadow, as a receiver would. At the end the program stops, one
// last round runs, and the shadow must equal memory page for page.
//
// It fails on a missed dirty page (shadow differs), on a tracker call that fails, and on a
// failed munmap/mremap/mprotect of the program (e.g. EFAULT from an mremap of a mapping that the
// tracker split by registering a range that no longer matched it). With a LayoutGate the program
// thread opens a change around each call as the agent's interposers do; without one (glibc's
// own mmap/munmap bypass the interposers) it only maps, unmaps, replaces and discards, as malloc
// does. Exits 77 where the backend is unavailable. Built once per backend that changes the
// kernel's view of ranges (pagemap-scan, uffd-wp, mprotect).
#include <doctest/doctest.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_format.h"
#include "dirty/tracker_probe.h"
#include "unit/dirty/scenario_support.h"
#include "unit/dirty/tracker_scenarios.h"

namespace procmig::testing {
namespace {

constexpr size_t kSlots = 192;
constexpr size_t kSlotPages = 4;

// What last happened to each page of the arena, for the message of a failure: the follower's
// round, and the program's last write (kind of op) or the follower's last copy (full or dirty).
struct History {
  std::atomic<uint64_t> round{0};
  std::atomic<uint64_t> write[kSlots * kSlotPages] = {};  // round << 8 | op kind
  std::atomic<uint64_t> copy[kSlots * kSlotPages] = {};   // round << 8 | 1 full, 2 dirty
  uintptr_t lo = 0;
  size_t Index(uintptr_t addr) const { return (addr - lo) / Page(); }
  void Wrote(uintptr_t addr, size_t pages, int kind) {
    for (size_t i = 0; i < pages; ++i) {
      write[Index(addr) + i].store(round.load() << 8 | static_cast<uint64_t>(kind));
    }
  }
  std::string Of(uintptr_t addr) const {
    const uint64_t w = write[Index(addr)].load(), c = copy[Index(addr)].load();
    return absl::StrFormat("last written in round %d by op %d, last copied in round %d (%s)",
                           w >> 8, w & 0xff, c >> 8, (c & 0xff) == 1 ? "full" : "dirty");
  }
};
History g_history;

// One change of the program, opened on the gate around the real call (the interposers' way).
class Change {
 public:
  explicit Change(LayoutGate* gate) : gate_(gate) {
    if (gate_ == nullptr) return;
    while (!gate_->TryBeginChange()) gate_->WaitUntilOpen();
  }
  void End(uintptr_t lo1, uintptr_t hi1, uintptr_t lo2 = 0, uintptr_t hi2 = 0) {
    if (gate_ != nullptr) gate_->EndChange(lo1, hi1, lo2, hi2);
    gate_ = nullptr;
  }
  ~Change() { End(0, 0); }
  LayoutGate* gate() const { return gate_; }

 private:
  LayoutGate* gate_;
};

class Program {
 public:
  // Which kinds of change the program makes besides mapping, writing and unmapping.
  struct Ops {
    bool replace = true;   // mmap MAP_FIXED over a live region
    bool discard = true;   // madvise(MADV_DONTNEED)
    bool mremap = true;    // grow, shrink, move
    bool mprotect = true;  // read-only and back
    // Map into slots freed (unmapped) so recently that the follower may not have seen the hole.
    // Mapped again with the old extent, that is a replacement in all but name.
    bool reuse_unseen = true;
  };
  // The arena's holes (an unmapped region, the gap before an in-place growth) must stay the
  // program's: a mapping of another thread placed there (a thread stack, a malloc chunk) would be
  // followed as the program's memory and then overwritten by a MAP_FIXED of the program. A
  // reserved guard slot at each end keeps every hole inside the arena, smaller than a thread
  // stack; RunLayoutRace keeps malloc out of mmap for the rest.
  Program(LayoutGate* gate, Ops ops) : gate_(gate), ops_kinds_(ops), owner_(kSlots, -1) {
    page_ = Page();
    slot_ = kSlotPages * page_;
    void* p = mmap(nullptr, (kSlots + 2) * slot_, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<char*>(p) + slot_;
  }
  ~Program() { munmap(base_ - slot_, (kSlots + 2) * slot_); }

  uintptr_t lo() const { return reinterpret_cast<uintptr_t>(base_); }
  uintptr_t hi() const { return lo() + kSlots * slot_; }

  void Run(std::atomic<bool>& stop) {
    std::mt19937_64 rng(12345);
    while (!stop.load(std::memory_order_relaxed) && errors_.load() == 0) {
      OneOp(rng);
      ++ops_;
    }
  }
  uint64_t ops() const { return ops_; }
  int errors() const { return errors_.load(); }
  std::string first_error() {
    std::lock_guard<std::mutex> l(mu_);
    return first_error_;
  }

 private:
  struct Region {
    size_t first = 0, slots = 0;
    bool read_only = false;
  };

  void Fail(const char* what) {
    std::lock_guard<std::mutex> l(mu_);
    if (first_error_.empty()) first_error_ = std::string(what) + ": " + std::strerror(errno);
    errors_.fetch_add(1);
  }
  char* At(size_t slot) const { return base_ + slot * slot_; }
  uintptr_t U(size_t slot) const { return reinterpret_cast<uintptr_t>(At(slot)); }

  // A run of `n` free slots, or kSlots.
  size_t FreeRun(std::mt19937_64& rng, size_t n) {
    for (int tries = 0; tries < 8; ++tries) {
      size_t s = rng() % (kSlots - n + 1);
      bool free = true;
      for (size_t i = s; i < s + n && free; ++i) {
        // A follower round started after the one in progress at the unmap has read the layout.
        free = owner_[i] < 0 && (ops_kinds_.reuse_unseen || freed_[i] + 2 <= g_history.round);
      }
      if (free) return s;
    }
    return kSlots;
  }
  void Own(const Region& r, int id) {
    for (size_t i = r.first; i < r.first + r.slots; ++i) {
      owner_[i] = id;
      if (id < 0) freed_[i] = g_history.round;
    }
  }
  void Fill(std::mt19937_64& rng, char* p, size_t pages) {
    for (size_t j = 0; j < pages; ++j) {
      auto* w = reinterpret_cast<uint64_t*>(p + j * page_);
      const uint64_t v = rng();
      for (size_t k = 0; k < page_ / 8; k += 61) w[k] = v + k;
    }
  }

  void OneOp(std::mt19937_64& rng) {
    const int kind = static_cast<int>(rng() % 10);
    if ((kind == 4 && !ops_kinds_.replace) || (kind == 5 && !ops_kinds_.discard) ||
        (kind >= 6 && kind <= 8 && !ops_kinds_.mremap) || (kind == 9 && !ops_kinds_.mprotect)) {
      return;
    }
    if (kind == 0 || regions_.empty()) {  // map a new region into free slots
      if (regions_.size() >= 40) return;
      const size_t n = 1 + rng() % 3;
      const size_t s = FreeRun(rng, n);
      if (s == kSlots) return;
      Change c(gate_);
      void* p = mmap(At(s), n * slot_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      c.End(U(s), U(s) + n * slot_);
      if (p != At(s)) return Fail("mmap");
      Fill(rng, At(s), n * kSlotPages);
      g_history.Wrote(U(s), n * kSlotPages, 0);
      regions_.push_back({s, n, false});
      Own(regions_.back(), 1);
      return;
    }
    const size_t ri = rng() % regions_.size();
    Region& r = regions_[ri];
    char* p = At(r.first);
    const size_t len = r.slots * slot_;
    switch (kind) {
      case 1:
      case 2: {  // writes
        if (r.read_only) return;
        for (int i = 0; i < 4; ++i) {
          const size_t pg = rng() % (r.slots * kSlotPages);
          reinterpret_cast<volatile uint64_t*>(p + pg * page_)[rng() % (page_ / 8)] = rng();
          g_history.Wrote(U(r.first) + pg * page_, 1, kind);
        }
        return;
      }
      case 3: {  // unmap (leaves a hole in the arena)
        Change c(gate_);
        const int rc = munmap(p, len);
        c.End(U(r.first), U(r.first) + len);
        if (rc != 0) return Fail("munmap");
        Own(r, -1);
        regions_.erase(regions_.begin() + static_cast<ptrdiff_t>(ri));
        return;
      }
      case 4: {  // replaced by a fresh mapping of the same extent (looks unchanged in maps)
        Change c(gate_);
        void* q =
            mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        c.End(U(r.first), U(r.first) + len);
        if (q != p) return Fail("mmap over");
        r.read_only = false;
        Fill(rng, p, r.slots * kSlotPages);
        g_history.Wrote(U(r.first), r.slots * kSlotPages, 4);
        return;
      }
      case 5: {  // discard part
        if (r.read_only) return;
        const size_t pages = r.slots * kSlotPages;
        const size_t first = rng() % pages;
        const size_t n = 1 + rng() % (pages - first);
        Change c(gate_);
        if (madvise(p + first * page_, n * page_, MADV_DONTNEED) != 0) return Fail("madvise");
        if (c.gate() != nullptr) c.gate()->NoteDiscard(U(r.first) + first * page_, n * page_);
        g_history.Wrote(U(r.first) + first * page_, n, 5);
        c.End(U(r.first) + first * page_, U(r.first) + (first + n) * page_);
        return;
      }
      case 6: {  // grow in place into free slots
        const size_t end = r.first + r.slots;
        if (end >= kSlots || owner_[end] >= 0) return;
        // In-place growth needs the range after it unmapped, not just reserved.
        {
          Change c(gate_);
          const int rc = munmap(At(end), slot_);
          c.End(U(end), U(end) + slot_);
          if (rc != 0) return Fail("munmap before grow");
        }
        Change c(gate_);
        void* q = mremap(p, len, len + slot_, 0);
        c.End(U(r.first), U(r.first) + len + slot_);
        if (q != p) return Fail("mremap grow in place");
        owner_[end] = 1;
        r.slots += 1;
        if (!r.read_only) Fill(rng, At(end), kSlotPages);
        if (!r.read_only) g_history.Wrote(U(end), kSlotPages, 6);
        return;
      }
      case 7: {  // shrink
        if (r.slots < 2) return;
        Change c(gate_);
        void* q = mremap(p, len, len - slot_, 0);
        c.End(U(r.first), U(r.first) + len);
        if (q != p) return Fail("mremap shrink");
        owner_[r.first + r.slots - 1] = -1;
        freed_[r.first + r.slots - 1] = g_history.round;
        r.slots -= 1;
        return;
      }
      case 8: {  // move elsewhere in the arena
        const size_t s = FreeRun(rng, r.slots);
        if (s == kSlots) return;
        Change c(gate_);
        void* q = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, At(s));
        c.End(U(r.first), U(r.first) + len, U(s), U(s) + len);
        if (q != At(s)) return Fail("mremap move");
        Own(r, -1);
        r.first = s;
        Own(r, 1);
        g_history.Wrote(U(s), r.slots * kSlotPages, 8);
        return;
      }
      default: {  // read-only and back
        Change c(gate_);
        const int rc = mprotect(p, len, r.read_only ? PROT_READ | PROT_WRITE : PROT_READ);
        c.End(U(r.first), U(r.first) + len);
        if (rc != 0) return Fail("mprotect");
        r.read_only = !r.read_only;
        return;
      }
    }
  }

  LayoutGate* const gate_;
  const Ops ops_kinds_;
  size_t page_ = 0, slot_ = 0;
  char* base_ = nullptr;
  std::vector<int> owner_;       // per slot: >= 0 owned by a region
  uint64_t freed_[kSlots] = {};  // per slot: the follower's round when it was last unmapped
  std::vector<Region> regions_;
  uint64_t ops_ = 0;
  std::atomic<int> errors_{0};
  std::mutex mu_;
  std::string first_error_;
};

// Writable private mappings inside [lo, hi), as (start, end), from /proc/self/maps.
std::vector<std::pair<uintptr_t, uintptr_t>> ReadLayout(uintptr_t lo, uintptr_t hi) {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    unsigned long a = 0, b = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &a, &b, perms) != 3) continue;
    if (a < lo || b > hi || perms[0] != 'r' || perms[1] != 'w') continue;
    out.emplace_back(a, b);
  }
  return out;
}

// The sender's side: blocks by start address, a shadow of every sent page.
class Follower {
 public:
  Follower(DirtyTracker& t, uintptr_t lo, uintptr_t hi) : t_(t), lo_(lo), hi_(hi) {}

  // One round: layout, block changes, sync, copies. False (with `why`) on a tracker failure.
  bool Round(bool first, std::string* why) {
    g_history.round.fetch_add(1);
    auto layout = ReadLayout(lo_, hi_);
    std::map<uintptr_t, uintptr_t> now(layout.begin(), layout.end());
    std::vector<uint32_t> removed;
    std::vector<RamBlock> added;
    for (auto it = blocks_.begin(); it != blocks_.end();) {
      auto n = now.find(it->first);
      if (n != now.end() && n->second == it->second.end()) {
        ++it;
        continue;
      }
      removed.push_back(it->second.id);
      Drop(it->second.start, it->second.end());
      it = blocks_.erase(it);
    }
    for (const auto& [a, b] : now) {
      if (blocks_.count(a) != 0) continue;
      RamBlock blk = MakeBlock(next_id_++, reinterpret_cast<const char*>(a), b - a);
      blocks_[a] = blk;
      added.push_back(blk);
      full_.push_back(blk.id);
    }
    absl::Status s;
    if (first) {
      s = t_.Start(added);
    } else {
      if (!removed.empty()) s = t_.RemoveBlocks(removed);
      if (s.ok() && !added.empty()) s = t_.AddBlocks(added);
    }
    if (!s.ok()) {
      *why = s.ToString();
      return false;
    }
    absl::StatusOr<const DirtySet*> set = t_.Sync();
    if (!set.ok()) {
      *why = set.status().ToString();
      return false;
    }
    ++syncs_;
    std::vector<uint32_t> full;
    full.swap(full_);
    for (uint32_t id : full) {
      for (const auto& [a, b] : blocks_) {
        if (b.id == id && !CopyPages(b.start, b.page_count(), 1)) full_.push_back(id);
      }
    }
    (*set)->ForEachRun([&](const DirtyBlock& b, PageRun run) {
      if (!CopyPages(b.start + run.first * b.page_size, run.count, 2)) full_.push_back(b.id);
    });
    return true;
  }

  // Pages of the final blocks whose shadow differs from memory (or is missing).
  size_t Mismatches(std::string* first) const {
    size_t bad = 0;
    for (const auto& [a, b] : blocks_) {
      for (uintptr_t p = b.start; p < b.end(); p += Page()) {
        auto it = shadow_.find(p);
        if (it != shadow_.end() &&
            std::memcmp(it->second.data(), reinterpret_cast<void*>(p), Page()) == 0) {
          continue;
        }
        if (bad++ == 0) {
          *first =
              absl::StrFormat("block %u page 0x%x: %s; %s", b.id, p,
                              it == shadow_.end() ? "never sent" : "stale copy", g_history.Of(p));
        }
      }
    }
    return bad;
  }
  size_t blocks() const { return blocks_.size(); }
  size_t pending_full() const { return full_.size(); }
  uint64_t syncs() const { return syncs_; }

 private:
  // process_vm_readv: safe against a concurrent munmap (the program may unmap at any time).
  bool CopyPages(uintptr_t addr, size_t count, int how) {
    std::string buf(count * Page(), '\0');
    iovec local{buf.data(), buf.size()};
    iovec remote{reinterpret_cast<void*>(addr), buf.size()};
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != static_cast<ssize_t>(buf.size()))
      return false;
    for (size_t i = 0; i < count; ++i) {
      shadow_[addr + i * Page()] = buf.substr(i * Page(), Page());
      g_history.copy[g_history.Index(addr) + i].store(g_history.round.load() << 8 |
                                                      static_cast<uint64_t>(how));
    }
    return true;
  }
  void Drop(uintptr_t a, uintptr_t b) {
    for (uintptr_t p = a; p < b; p += Page()) shadow_.erase(p);
  }

  DirtyTracker& t_;
  const uintptr_t lo_, hi_;
  std::map<uintptr_t, RamBlock> blocks_;
  std::vector<uint32_t> full_;
  std::unordered_map<uintptr_t, std::string> shadow_;
  uint32_t next_id_ = 1;
  uint64_t syncs_ = 0;
};

void RunLayoutRace(TrackerKind kind, bool with_gate) {
  RequireBackend(kind);
  // Large allocations of this test's threads come from the heap, never from an mmap that could
  // land in a hole of the program's arena (see Program). 32 MiB is glibc's largest threshold.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  LayoutGate gate;
  TrackerConfig cfg;
  cfg.layout_gate = with_gate ? &gate : nullptr;
  std::unique_ptr<DirtyTracker> tracker = MakeTracker(kind, cfg);
  // Without a gate the program stands for glibc's own calls: it maps, writes and unmaps, and
  // (where the backend can see it unreported) replaces and discards. A discard nobody reports is
  // seen by pagemap-scan alone (an emptied pte counts as written); a mapping made over a tracked
  // one is seen by the uffd backends (the new mapping is not registered) but not by mprotect
  // (it is simply writable), nor one unmapped and mapped again before a sync read the layout.
  // mprotect splits mappings by design, so its program never mremaps.
  Program::Ops ops;
  ops.discard = with_gate || kind == TrackerKind::kPagemapScan;
  ops.replace = with_gate || kind != TrackerKind::kMprotect;
  ops.mremap = with_gate && kind != TrackerKind::kMprotect;
  ops.mprotect = with_gate;
  ops.reuse_unseen = with_gate || kind != TrackerKind::kMprotect;
  Program program(cfg.layout_gate, ops);
  g_history.lo = program.lo();
  for (auto& w : g_history.write) w = 0;
  for (auto& c : g_history.copy) c = 0;
  Follower follower(*tracker, program.lo(), program.hi());
  std::atomic<bool> stop{false};
  std::thread churn([&] { program.Run(stop); });
  std::string why;
  bool ok = true;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  for (bool first = true; ok && std::chrono::steady_clock::now() < until; first = false) {
    ok = follower.Round(first, &why);
  }
  stop = true;
  churn.join();
  INFO("tracker: " << why);
  REQUIRE(ok);
  INFO("program: " << program.first_error());
  REQUIRE(program.errors() == 0);
  // The program is stopped: one more round must leave nothing unsent.
  REQUIRE(follower.Round(false, &why));
  CHECK(follower.pending_full() == 0);
  std::string first;
  const size_t bad = follower.Mismatches(&first);
  INFO(first);
  CHECK(bad == 0);
  const TrackerStats st = tracker->stats();
  MESSAGE(std::string(TrackerKindName(kind))
          << std::string(with_gate ? " with" : " without") << " a gate: " << program.ops()
          << " program ops, " << follower.syncs() << " syncs, " << follower.blocks()
          << " blocks at the end, " << st.stale_blocks << " stale, " << st.arm_retries
          << " arm retries, " << st.rearms << " re-arms, " << gate.waits() << " waits at the gate");
  CHECK(program.ops() > 100);
  CHECK(follower.syncs() > 10);
  REQUIRE(tracker->Stop().ok());
}

// One binary per backend (PROCMIG_RACE_KIND), so an unavailable one skips (77) alone.
constexpr TrackerKind kKind = TrackerKind::PROCMIG_RACE_KIND;

TEST_CASE("layout race: program changing its layout through the gate during syncs") {
  RunLayoutRace(kKind, true);
}

TEST_CASE("layout race: program mapping and unmapping without the gate (glibc's own)") {
  RunLayoutRace(kKind, false);
}

}  // namespace
}  // namespace procmig::testing
