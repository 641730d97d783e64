#include "base/page_bitmap.h"

#include <doctest/doctest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace procmig {
namespace {

// Reference model: the runs of a vector<bool>, computed the obvious way.
std::vector<PageRun> ModelRuns(const std::vector<bool>& bits, size_t from = 0) {
  std::vector<PageRun> runs;
  for (size_t i = from; i < bits.size();) {
    if (!bits[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < bits.size() && bits[j]) ++j;
    runs.push_back({i, j - i});
    i = j;
  }
  return runs;
}

std::vector<PageRun> Runs(const PageBitmap& b, size_t from = 0) {
  std::vector<PageRun> runs;
  b.ForEachRun([&](size_t first, size_t count) { runs.push_back({first, count}); }, from);
  return runs;
}

void CheckMatchesModel(const PageBitmap& b, const std::vector<bool>& m) {
  REQUIRE(b.size() == m.size());
  size_t count = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    REQUIRE(b.Test(i) == m[i]);
    count += m[i];
  }
  REQUIRE(b.Count() == count);
  REQUIRE(Runs(b) == ModelRuns(m));
  // Tail bits past size() stay zero.
  if (m.size() % 64 != 0) {
    REQUIRE((b.words().back() >> (m.size() % 64)) == 0);
  }
  for (size_t from = 0; from <= m.size() + 1; from += 1 + from / 8) {
    size_t want_set = m.size(), want_clear = m.size();
    for (size_t i = from; i < m.size(); ++i) {
      if (m[i] && want_set == m.size()) want_set = i;
      if (!m[i] && want_clear == m.size()) want_clear = i;
    }
    REQUIRE(b.FindNextSet(from) == want_set);
    REQUIRE(b.FindNextClear(from) == want_clear);
  }
}

TEST_CASE("sizes: words and bytes") {
  CHECK(PageBitmap::WordsFor(0) == 0);
  CHECK(PageBitmap::WordsFor(1) == 1);
  CHECK(PageBitmap::WordsFor(64) == 1);
  CHECK(PageBitmap::WordsFor(65) == 2);
  CHECK(PageBitmap::BytesFor(129) == 24);
}

TEST_CASE("empty bitmaps of zero pages") {
  PageBitmap def;
  PageBitmap zero(0);
  for (PageBitmap* b : {&def, &zero}) {
    CHECK(b->size() == 0);
    CHECK(b->Count() == 0);
    CHECK(b->Empty());
    CHECK(b->FindNextSet(0) == 0);
    CHECK(b->FindNextClear(0) == 0);
    CHECK(Runs(*b).empty());
    PageRun out[2];
    size_t resume = 99;
    CHECK(b->HarvestCollect(out, 0, &resume) == 0);
    CHECK(resume == 0);
    b->SetAll();
    b->ClearAll();
  }
}

TEST_CASE("single bits, edges of words and of the bitmap") {
  for (size_t n : {1, 63, 64, 65, 127, 128, 129, 200}) {
    CAPTURE(n);
    PageBitmap b(n);
    std::vector<bool> m(n);
    CheckMatchesModel(b, m);
    for (size_t i :
         {size_t{0}, size_t{62}, size_t{63}, size_t{64}, size_t{127}, size_t{128}, n - 1}) {
      if (i >= n) continue;
      b.Set(i);
      m[i] = true;
    }
    CheckMatchesModel(b, m);
    CHECK(b.TestAndClear(n - 1));
    CHECK_FALSE(b.TestAndClear(n - 1));
    m[n - 1] = false;
    CheckMatchesModel(b, m);
    b.Clear(0);
    m[0] = false;
    CheckMatchesModel(b, m);
  }
}

TEST_CASE("full bitmap: one run of every page, and nothing clear") {
  for (size_t n : {1, 64, 100, 128, 1000}) {
    CAPTURE(n);
    PageBitmap b(n);
    b.SetAll();
    CHECK(b.Count() == n);
    CHECK(b.FindNextClear(0) == n);
    CHECK(Runs(b) == std::vector<PageRun>{{0, n}});
    CHECK(b.CountRange(1 % n, n - 1 % n) == n - 1 % n);
    std::vector<PageRun> harvested;
    CHECK(b.HarvestRuns([&](size_t f, size_t c) { harvested.push_back({f, c}); }) == n);
    CHECK(harvested == std::vector<PageRun>{{0, n}});
    CHECK(b.Empty());
    CHECK(b.Count() == 0);
  }
}

TEST_CASE("SetRange/ClearRange across word boundaries match the model") {
  std::mt19937_64 rng(1);
  for (size_t n : {1, 7, 64, 65, 130, 191, 192, 193, 1000}) {
    CAPTURE(n);
    PageBitmap b(n);
    std::vector<bool> m(n);
    for (int op = 0; op < 400; ++op) {
      size_t first = rng() % (n + 1);
      size_t count = rng() % (n - first + 1);
      bool set = rng() % 3 != 0;
      if (set) {
        b.SetRange(first, count);
      } else {
        b.ClearRange(first, count);
      }
      for (size_t i = first; i < first + count; ++i) m[i] = set;
      size_t cf = rng() % (n + 1);
      size_t cc = rng() % (n - cf + 1);
      size_t want = 0;
      for (size_t i = cf; i < cf + cc; ++i) want += m[i];
      REQUIRE(b.CountRange(cf, cc) == want);
      if (op % 40 == 0) CheckMatchesModel(b, m);
    }
    CheckMatchesModel(b, m);
  }
}

TEST_CASE("a run spanning several words is reported once, exactly") {
  PageBitmap b(300);
  b.SetRange(60, 150);  // words 0..3
  b.Set(0);
  b.Set(299);
  CHECK(Runs(b) == std::vector<PageRun>{{0, 1}, {60, 150}, {299, 1}});
  // Starting inside a run cuts it at `from`.
  CHECK(Runs(b, 100) == std::vector<PageRun>{{100, 110}, {299, 1}});
  CHECK(Runs(b, 210) == std::vector<PageRun>{{299, 1}});
  CHECK(Runs(b, 300).empty());
}

TEST_CASE("harvest clears exactly what it reports, and only at or after `from`") {
  std::mt19937_64 rng(2);
  for (size_t n : {65, 200, 4096 + 3}) {
    CAPTURE(n);
    PageBitmap b(n);
    std::vector<bool> m(n);
    for (size_t i = 0; i < n; ++i) {
      if (rng() % 3 == 0) {
        b.Set(i);
        m[i] = true;
      }
    }
    size_t from = n / 3 + 5;
    std::vector<PageRun> got;
    b.HarvestRuns([&](size_t f, size_t c) { got.push_back({f, c}); }, from);
    CHECK(got == ModelRuns(m, from));
    for (size_t i = from; i < n; ++i) m[i] = false;
    CheckMatchesModel(b, m);
  }
}

TEST_CASE("a callback returning false stops the walk; harvest keeps unreported bits") {
  PageBitmap b(200);
  b.SetRange(3, 2);
  b.SetRange(10, 1);
  b.SetRange(62, 4);  // crosses word 0/1
  b.SetRange(70, 5);
  b.SetRange(199, 1);
  std::vector<PageRun> seen;
  auto two = [&](size_t f, size_t c) {
    seen.push_back({f, c});
    return seen.size() < 2;
  };
  CHECK(b.ForEachRun(two) == 11);
  CHECK(seen == std::vector<PageRun>{{3, 2}, {10, 1}});
  CHECK(b.Count() == 13);  // ForEachRun never clears

  seen.clear();
  CHECK(b.HarvestRuns(two) == 11);
  CHECK(seen == std::vector<PageRun>{{3, 2}, {10, 1}});
  CHECK(Runs(b) == std::vector<PageRun>{{62, 4}, {70, 5}, {199, 1}});

  seen.clear();
  CHECK(b.HarvestRuns(two, 11) == 75);  // the first run taken crosses into word 1
  CHECK(seen == std::vector<PageRun>{{62, 4}, {70, 5}});
  CHECK(Runs(b) == std::vector<PageRun>{{199, 1}});
}

TEST_CASE("CollectRuns and HarvestCollect page through runs with a small array") {
  std::mt19937_64 rng(3);
  const size_t n = 5000;
  PageBitmap b(n);
  std::vector<bool> m(n);
  for (size_t i = 0; i < n; ++i) {
    if (rng() % 4 != 0) {
      b.Set(i);
      m[i] = true;
    }
  }
  const auto want = ModelRuns(m);
  REQUIRE(want.size() > 100);

  for (bool harvest : {false, true}) {
    CAPTURE(harvest);
    std::vector<PageRun> got;
    PageRun buf[7];
    size_t from = 0;
    int calls = 0;
    while (from < n) {
      size_t next = 0;
      size_t k = harvest ? b.HarvestCollect(buf, from, &next) : b.CollectRuns(buf, from, &next);
      REQUIRE(k <= 7);
      REQUIRE(next > from);
      got.insert(got.end(), buf, buf + k);
      from = next;
      ++calls;
    }
    CHECK(got == want);
    CHECK(calls >= static_cast<int>(want.size() / 7));
    CHECK(b.Count() == (harvest ? 0 : static_cast<size_t>(std::count(m.begin(), m.end(), true))));
  }
  // An empty output array stores nothing and resumes where it started.
  size_t next = 0;
  PageBitmap c(10);
  c.SetAll();
  CHECK(c.HarvestCollect({}, 4, &next) == 0);
  CHECK(next == 4);
  CHECK(c.Count() == 10);
}

TEST_CASE("caller-provided storage is cleared, used in place, and needs no malloc") {
  std::vector<uint64_t> storage(4, ~uint64_t{0});
  struct mallinfo2 before = mallinfo2();
  PageBitmap b(200, storage);
  for (size_t i = 0; i < 200; i += 3) b.Set(i);
  size_t runs = 0, pages = 0;
  b.HarvestRuns([&](size_t, size_t c) {
    ++runs;
    pages += c;
  });
  PageBitmap moved(std::move(b));
  moved.SetRange(5, 100);
  struct mallinfo2 after = mallinfo2();
  CHECK(after.uordblks == before.uordblks);
  CHECK(runs == 67);
  CHECK(pages == 67);
  CHECK(moved.words().data() == storage.data());
  CHECK(storage[0] == (~uint64_t{0} << 5));
  CHECK(storage[3] == 0);  // was all ones: the constructor cleared it, harvest emptied it
  CHECK(b.size() == 0);    // moved-from
}

TEST_CASE("SetAtomic racing with harvest loses no bit and reports none twice") {
  const size_t n = 1 << 16;
  PageBitmap b(n);
  std::atomic<bool> done{false};
  std::thread setter([&] {
    // Set every page once, in a scattered order, while the main thread harvests.
    for (size_t k = 0; k < n; ++k) b.SetAtomic((k * 40503) % n);
    done.store(true, std::memory_order_release);
  });
  std::vector<uint8_t> hits(n);
  auto take = [&](size_t f, size_t c) {
    for (size_t i = f; i < f + c; ++i) ++hits[i];
  };
  while (!done.load(std::memory_order_acquire)) b.HarvestRuns(take);
  setter.join();
  b.HarvestRuns(take);
  size_t once = 0;
  for (uint8_t h : hits) once += (h == 1);
  CHECK(once == n);
  CHECK(b.Empty());
}

}  // namespace
}  // namespace procmig
