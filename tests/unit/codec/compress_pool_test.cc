#include "codec/compress_pool.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "codec/zlib_codec.h"

namespace procmig {
namespace {

using Bytes = std::vector<uint8_t>;

// Job i's input: its size and compressibility vary, so jobs finish out of order on the workers.
Bytes JobInput(uint64_t i) {
  std::mt19937_64 rng(i);
  const size_t n = 1 + rng() % (16 * 4096);
  Bytes v(n);
  const bool random = i % 3 == 0;
  for (size_t k = 0; k < n; ++k) {
    v[k] = random ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>((k / 64 + i) % 7);
  }
  return v;
}

std::unique_ptr<CompressPool> MakePool(int threads, int level, size_t depth) {
  CompressPoolConfig c;
  c.threads = threads;
  c.level = level;
  c.queue_depth = depth;
  auto pool = CompressPool::Create(c);
  REQUIRE_MESSAGE(pool.ok(), pool.status().ToString());
  return *std::move(pool);
}

Bytes Inflate(const CompressPool::Result& r, size_t expected) {
  auto d = ZlibDecompressor::Create();
  REQUIRE(d.ok());
  Bytes out(expected);
  absl::Status s = (*d)->DecompressExact(r.data, r.size, out.data(), expected);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  return out;
}

TEST_CASE("config validation names the bad field") {
  auto check = [](CompressPoolConfig c, const std::string& message) {
    CHECK(c.Validate().code() == absl::StatusCode::kInvalidArgument);
    CHECK(c.Validate().message() == message);
    CHECK(CompressPool::Create(c).status() == c.Validate());
  };
  CHECK(CompressPoolConfig{}.Validate().ok());
  CompressPoolConfig c;
  c.threads = 0;
  check(c, "compress pool config: threads 0 is outside 1..64");
  c.threads = 65;
  check(c, "compress pool config: threads 65 is outside 1..64");
  c = CompressPoolConfig{};
  c.level = -1;
  check(c, "compress pool config: level -1 is outside 0..9");
  c.level = 10;
  check(c, "compress pool config: level 10 is outside 0..9");
  c = CompressPoolConfig{};
  c.max_job_bytes = 0;
  check(c, "compress pool config: max_job_bytes 0 is outside 1..64 MiB");
  c.max_job_bytes = (64u << 20) + 1;
  check(c, "compress pool config: max_job_bytes 67108865 is outside 1..64 MiB");
  c = CompressPoolConfig{};
  c.queue_depth = 4097;
  check(c, "compress pool config: queue_depth 4097 is above 4096");
}

TEST_CASE("many jobs on several threads come back in submission order, intact") {
  for (int threads : {1, 2, 4}) {
    CAPTURE(threads);
    auto pool = MakePool(threads, 1, 6);
    const uint64_t kJobs = 600;
    uint64_t submitted = 0, collected = 0;
    while (collected < kJobs) {
      while (submitted < kJobs && !pool->Full()) {
        Bytes in = JobInput(submitted);
        auto seq = pool->Submit(in.data(), in.size());
        REQUIRE(seq.ok());
        CHECK(*seq == submitted);
        ++submitted;
      }
      CHECK(pool->Outstanding() == submitted - collected);
      auto r = pool->Collect();
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      CHECK(r->seq == collected);
      Bytes expected = JobInput(collected);
      CHECK(r->input_size == expected.size());
      if (Inflate(*r, expected.size()) != expected) FAIL_CHECK("job " << collected << " differs");
      ++collected;
    }
    CHECK(pool->Outstanding() == 0);
  }
}

TEST_CASE("a full pool refuses Submit until a result is collected") {
  auto pool = MakePool(2, 1, 2);
  Bytes page(4096, 7);
  REQUIRE(pool->Submit(page.data(), page.size()).ok());
  REQUIRE(pool->Submit(page.data(), page.size()).ok());
  CHECK(pool->Full());
  CHECK(pool->Outstanding() == 2);
  auto s = pool->Submit(page.data(), page.size());
  CHECK(s.status().code() == absl::StatusCode::kInternal);
  CHECK(s.status().message() == "compress pool submit: all 2 slots are in flight; Collect() first");
  auto r = pool->Collect();
  REQUIRE(r.ok());
  CHECK(r->seq == 0);
  CHECK(Inflate(*r, 4096) == page);
  CHECK_FALSE(pool->Full());
  auto seq = pool->Submit(page.data(), page.size());
  REQUIRE(seq.ok());
  CHECK(*seq == 2);
  CHECK(pool->Full());
  CHECK(pool->Collect()->seq == 1);
  CHECK(pool->Collect()->seq == 2);
  CHECK(pool->Outstanding() == 0);
}

TEST_CASE("misuse is reported, not a hang") {
  auto pool = MakePool(1, 1, 0);
  CHECK(pool->Collect().status().message() == "compress pool collect: no job is outstanding");
  Bytes big(pool->config().max_job_bytes + 1);
  auto s = pool->Submit(big.data(), big.size());
  CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(s.status().message() ==
        "compress pool submit: job of 65537 bytes exceeds max_job_bytes 65536");
}

TEST_CASE("the input is copied at Submit: changing the page afterwards does not matter") {
  auto pool = MakePool(1, 6, 4);
  Bytes page(4096, 0x41);
  REQUIRE(pool->Submit(page.data(), page.size()).ok());
  std::fill(page.begin(), page.end(), 0x42);
  auto r = pool->Collect();
  REQUIRE(r.ok());
  CHECK(Inflate(*r, 4096) == Bytes(4096, 0x41));
}

TEST_CASE("level 0 stores, and the pool shuts down with jobs outstanding") {
  auto pool = MakePool(3, 0, 0);
  Bytes page(4096, 0);
  for (int i = 0; i < 12; ++i) REQUIRE(pool->Submit(page.data(), page.size()).ok());
  auto r = pool->Collect();
  REQUIRE(r.ok());
  CHECK(r->size > 4096);  // stored, not compressed
  CHECK(Inflate(*r, 4096) == page);
  pool.reset();  // must join without collecting the other 11
}

}  // namespace
}  // namespace procmig
