// LayoutGate: changes and the tracker's lock exclude each other, the change log answers "was this
// range touched since then" (conservatively once it overflows), discards reach the attached
// tracker only while one is attached, and only the holder passes through.
#include "procmig/layout_gate.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace procmig {
namespace {

using namespace std::chrono_literals;

TEST_CASE("layout gate: a change cannot open while the tracker holds the gate, and waits for it") {
  LayoutGate gate;
  gate.Lock();
  CHECK(gate.HeldByCaller());
  CHECK_FALSE(gate.TryBeginChange());
  std::atomic<int> stage{0};
  std::thread program([&] {
    while (!gate.TryBeginChange()) gate.WaitUntilOpen();
    stage = 1;
    gate.EndChange(0x1000, 0x2000);
  });
  std::this_thread::sleep_for(50ms);
  CHECK(stage.load() == 0);  // still kept out
  const uint64_t before = gate.seq();
  gate.Unlock();
  program.join();
  CHECK(stage.load() == 1);
  CHECK(gate.seq() == before + 1);
  CHECK(gate.waits() >= 1);
}

TEST_CASE("layout gate: Lock waits until every open change is closed") {
  LayoutGate gate;
  REQUIRE(gate.TryBeginChange());
  REQUIRE(gate.TryBeginChange());  // changes run concurrently with one another
  std::atomic<bool> locked{false};
  std::thread tracker([&] {
    gate.Lock();
    locked = true;
    gate.Unlock();
  });
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(locked.load());
  gate.EndChange(0x1000, 0x2000);
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(locked.load());  // one change still open
  gate.EndChange(0, 0);        // an empty change logs nothing
  tracker.join();
  CHECK(locked.load());
  CHECK(gate.seq() == 1);
}

TEST_CASE("layout gate: only the holding thread passes through") {
  LayoutGate gate;
  CHECK_FALSE(gate.HeldByCaller());
  gate.Lock();
  bool other = true;
  std::thread([&] { other = gate.HeldByCaller(); }).join();
  CHECK_FALSE(other);
  CHECK(gate.HeldByCaller());
  gate.Unlock();
  CHECK_FALSE(gate.HeldByCaller());
}

TEST_CASE("layout gate: the holder may lock again; the gate opens at the last Unlock") {
  LayoutGate gate;
  gate.Lock();
  gate.Lock();  // e.g. the sender holds it across the park, the freezer locks it inside
  CHECK(gate.HeldByCaller());
  gate.Unlock();
  CHECK(gate.HeldByCaller());
  bool opened = true;
  std::thread([&] { opened = gate.TryBeginChange(); }).join();
  CHECK_FALSE(opened);  // still held
  gate.Unlock();
  CHECK_FALSE(gate.HeldByCaller());
  std::thread([&] {
    opened = gate.TryBeginChange();
    if (opened) gate.EndChange(0, 0);
  }).join();
  CHECK(opened);
}

TEST_CASE("layout gate: ChangedSince compares ranges of the logged changes") {
  LayoutGate gate;
  const uint64_t t0 = gate.seq();
  REQUIRE(gate.TryBeginChange());
  gate.EndChange(0x10000, 0x14000);  // munmap-like
  REQUIRE(gate.TryBeginChange());
  gate.EndChange(0x20000, 0x21000, 0x30000, 0x38000);  // mremap-like: old and new
  const uint64_t t2 = gate.seq();
  gate.Lock();
  CHECK(gate.ChangedSince(t0, 0x13000, 0x15000));        // overlaps the first
  CHECK_FALSE(gate.ChangedSince(t0, 0x14000, 0x20000));  // touches both, overlaps neither
  CHECK(gate.ChangedSince(t0, 0x37000, 0x40000));        // the second range of the second
  CHECK_FALSE(gate.ChangedSince(t0, 0x0, 0x10000));
  CHECK_FALSE(gate.ChangedSince(t0 + 1, 0x10000, 0x14000));  // the first is older than that
  CHECK_FALSE(gate.ChangedSince(t2, 0x0, ~uintptr_t{0}));    // nothing since
  CHECK(gate.ChangedSince(t2 + 5, 0x0, 0x1000));             // a moment not yet reached
  gate.Unlock();
}

TEST_CASE("layout gate: a change no longer remembered counts as touching everything") {
  LayoutGate gate;
  const uint64_t t0 = gate.seq();
  for (size_t i = 0; i < LayoutGate::kLogSize; ++i) {
    REQUIRE(gate.TryBeginChange());
    gate.EndChange(0x1000, 0x2000);
  }
  gate.Lock();
  // kLogSize changes since t0: the one right after t0 has been overwritten.
  CHECK(gate.ChangedSince(t0, 0x100000, 0x200000));
  CHECK_FALSE(gate.ChangedSince(t0 + 1, 0x100000, 0x200000));
  gate.Unlock();
}

TEST_CASE("layout gate: ChangesSince gives the touched parts of a range, clipped to it") {
  using Parts = std::vector<std::pair<uintptr_t, uintptr_t>>;
  auto collect = [](void* ctx, uintptr_t lo, uintptr_t hi) {
    static_cast<Parts*>(ctx)->emplace_back(lo, hi);
  };
  LayoutGate gate;
  const uint64_t t0 = gate.seq();
  REQUIRE(gate.TryBeginChange());
  gate.EndChange(0x10000, 0x14000);
  REQUIRE(gate.TryBeginChange());
  gate.EndChange(0x20000, 0x21000, 0x30000, 0x38000);
  gate.Lock();
  Parts parts;
  CHECK(gate.ChangesSince(t0, 0x12000, 0x32000, collect, &parts));
  CHECK(parts == Parts{{0x12000, 0x14000}, {0x20000, 0x21000}, {0x30000, 0x32000}});
  parts.clear();
  CHECK(gate.ChangesSince(t0 + 1, 0x0, 0x20000, collect, &parts));  // the second only: no overlap
  CHECK(parts.empty());
  CHECK(gate.ChangesSince(gate.seq(), 0x0, ~uintptr_t{0}, collect, &parts));  // nothing since
  CHECK(parts.empty());
  CHECK_FALSE(gate.ChangesSince(gate.seq() + 1, 0x0, 0x1000, collect, &parts));  // not reached
  gate.Unlock();
  for (size_t i = 0; i < LayoutGate::kLogSize; ++i) {
    REQUIRE(gate.TryBeginChange());
    gate.EndChange(0x1000, 0x2000);
  }
  gate.Lock();
  CHECK_FALSE(gate.ChangesSince(t0, 0x100000, 0x200000, collect, &parts));  // forgotten: all
  CHECK(parts.empty());
  gate.Unlock();
}

struct Sink {
  std::vector<std::pair<uintptr_t, size_t>> got;
  static void Fn(void* self, uintptr_t addr, size_t len) {
    static_cast<Sink*>(self)->got.emplace_back(addr, len);
  }
};

TEST_CASE("layout gate: discards reach the attached tracker, and nothing after Detach") {
  LayoutGate gate;
  Sink sink;
  CHECK_FALSE(gate.tracking());
  REQUIRE(gate.TryBeginChange());
  gate.NoteDiscard(0x1000, 0x1000);  // nobody attached: dropped
  gate.EndChange(0x1000, 0x2000);
  gate.Lock();
  gate.Attach(&Sink::Fn, &sink);
  gate.Unlock();
  CHECK(gate.tracking());
  REQUIRE(gate.TryBeginChange());
  gate.NoteDiscard(0x5000, 0x3000);
  gate.EndChange(0x5000, 0x8000);
  gate.Lock();
  gate.Detach();
  gate.Unlock();
  CHECK_FALSE(gate.tracking());
  REQUIRE(gate.TryBeginChange());
  gate.NoteDiscard(0x9000, 0x1000);
  gate.EndChange(0x9000, 0xa000);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].first == 0x5000);
  CHECK(sink.got[0].second == 0x3000);
}

TEST_CASE("layout gate: many changing threads and a locking thread never overlap") {
  LayoutGate gate;
  std::atomic<int> inside{0};     // open changes
  std::atomic<bool> held{false};  // the tracker's critical section
  std::atomic<int> violations{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        while (!gate.TryBeginChange()) gate.WaitUntilOpen();
        inside.fetch_add(1);
        if (held.load()) violations.fetch_add(1);
        inside.fetch_sub(1);
        gate.EndChange(0x1000, 0x2000);
      }
    });
  }
  int rounds = 0;
  const auto until = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < until) {
    gate.Lock();
    held = true;
    if (inside.load() != 0) violations.fetch_add(1);
    std::this_thread::yield();
    if (inside.load() != 0) violations.fetch_add(1);
    held = false;
    gate.Unlock();
    ++rounds;
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  MESSAGE(rounds << " lock rounds, " << gate.seq() << " changes");
  CHECK(violations.load() == 0);
  CHECK(rounds > 0);
  CHECK(gate.seq() > 0);
}

}  // namespace
}  // namespace procmig
