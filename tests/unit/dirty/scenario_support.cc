#include "unit/dirty/scenario_support.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "dirty/tracker_probe.h"

namespace procmig::testing {

RamBlock MakeBlock(uint32_t id, const char* base, size_t len) {
  RamBlock b;
  b.id = id;
  b.start = reinterpret_cast<uintptr_t>(base);
  b.length = len;
  b.page_size = Page();
  b.name = AnonymousBlockName(b.start);
  b.prot = PROT_READ | PROT_WRITE;
  return b;
}

void Check(const DirtySet& set, std::vector<Truth*> truths, Totals& totals, const char* what,
           int round) {
  for (Truth* t : truths) {
    const DirtyBlock* db = set.Find(t->block.id);
    REQUIRE(db != nullptr);
    REQUIRE(db->start == t->block.start);
    REQUIRE(db->pages.size() == t->written.size());
    size_t missed = 0;
    size_t first_missed = 0;
    for (size_t p = 0; p < t->written.size(); ++p) {
      const bool reported = db->pages.Test(p);
      totals.reported += reported;
      if (t->written[p]) {
        ++totals.written;
        if (!reported && missed++ == 0) first_missed = p;
      } else if (reported) {
        ++totals.false_positives;
      }
      t->written[p] = 0;
    }
    INFO(what, " round ", round, " block ", t->block.id, ": first missed page ", first_missed);
    CHECK(missed == 0);
  }
}

void Print(TrackerKind kind, const char* scenario, const Totals& t, const std::string& extra) {
  std::printf("[%s] %s: %zu pages written, %zu reported, %zu false positives, 0 missed%s\n",
              std::string(TrackerKindName(kind)).c_str(), scenario, t.written, t.reported,
              t.false_positives, extra.c_str());
  std::fflush(stdout);
}

const DirtySet& SyncOk(DirtyTracker& tracker) {
  absl::StatusOr<const DirtySet*> set = tracker.Sync();
  INFO(set.status().ToString());
  REQUIRE(set.ok());
  return **set;
}

std::unique_ptr<DirtyTracker> Started(TrackerKind kind, std::span<const RamBlock> blocks,
                                      WriteQuiescer* quiescer) {
  TrackerConfig config;
  config.quiescer = quiescer;
  std::unique_ptr<DirtyTracker> tracker = MakeTracker(kind, config);
  absl::Status s = tracker->Start(blocks);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return tracker;
}

size_t AnonHugeKb(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  const auto a = reinterpret_cast<uintptr_t>(addr);
  while (std::getline(smaps, line)) {
    const size_t dash = line.find('-');
    const size_t space = line.find(' ');
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && dash < space) {
      uintptr_t lo = std::strtoull(line.c_str(), nullptr, 16);
      uintptr_t hi = std::strtoull(line.c_str() + dash + 1, nullptr, 16);
      in = a >= lo && a < hi;
      continue;
    }
    size_t kb = 0;
    if (in && std::sscanf(line.c_str(), "AnonHugePages: %zu kB", &kb) == 1) return kb;
  }
  return 0;
}
}  // namespace procmig::testing
