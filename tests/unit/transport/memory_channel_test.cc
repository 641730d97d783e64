#include "transport/memory_channel.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "pattern_stream.h"

namespace procmig {
namespace {

MemoryChannel::Pair MakePair(MemoryPipeOptions o = {}) {
  auto p = MemoryChannel::CreatePair(o);
  REQUIRE(p.ok());
  return std::move(*p);
}

TEST_CASE("bytes flow both ways in order; EOF after shutdown") {
  auto [a, b] = MakePair();
  std::string one = "hello", two = " world";
  iovec iov[2] = {{one.data(), one.size()}, {two.data(), two.size()}};
  REQUIRE(a->WriteV(iov, 2).ok());
  REQUIRE(b->Write("back", 4).ok());
  char buf[16] = {};
  REQUIRE(b->ReadExact(buf, 11).ok());
  CHECK(std::string(buf, 11) == "hello world");
  REQUIRE(a->ReadExact(buf, 4).ok());
  CHECK(std::string(buf, 4) == "back");
  REQUIRE(a->Shutdown().ok());
  auto n = b->ReadSome(buf, sizeof(buf));
  REQUIRE(n.ok());
  CHECK(*n == 0);
  CHECK(a->Write("x", 1).code() == absl::StatusCode::kUnavailable);
  CHECK(a->counters().bytes_out == 11);
  CHECK(a->counters().bytes_in == 4);
  CHECK(a->counters().write_batches == 1);  // the failed write does not count
}

TEST_CASE("a bounded buffer streams 32 MiB with back-pressure and exact content") {
  MemoryPipeOptions o;
  o.capacity = 64 * 1024;
  auto [a, b] = MakePair(o);
  uint32_t sent_crc = 0;
  absl::Status ws;
  std::thread writer([&, &a = a] { ws = testing::WritePattern(*a, 7, 64, 128, &sent_crc); });
  testing::PatternChecker check(7, 64);
  absl::Status rs = check.Drain(*b);
  writer.join();
  REQUIRE(ws.ok());
  REQUIRE(rs.ok());
  CHECK(check.batches() == 128);
  CHECK(check.crc() == sent_crc);
}

TEST_CASE("short-write fault delivers the batch in pieces, still whole and in order") {
  MemoryPipeOptions o;
  o.first_to_second.max_write_chunk = 1000;
  auto [a, b] = MakePair(o);
  std::vector<uint8_t> data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13);
  std::thread writer([&, &a = a] { CHECK(a->Write(data.data(), data.size()).ok()); });
  std::vector<uint8_t> got;
  uint8_t buf[4096];
  while (got.size() < data.size()) {
    auto n = b->ReadSome(buf, sizeof(buf));
    REQUIRE(n.ok());
    got.insert(got.end(), buf, buf + *n);
  }
  writer.join();
  CHECK(got == data);
  CHECK(a->counters().write_resumes == 9);  // 10 pieces of at most 1000 bytes
  CHECK(a->counters().write_batches == 1);
}

TEST_CASE(
    "disconnect after N bytes: writer and reader both get Unavailable, reader first sees "
    "every byte before the break") {
  MemoryPipeOptions o;
  o.first_to_second.disconnect_after = 5000;
  auto [a, b] = MakePair(o);
  std::vector<uint8_t> data(8192, 0x5a);
  absl::Status w = a->Write(data.data(), data.size());
  CHECK(w.code() == absl::StatusCode::kUnavailable);
  CHECK(w.message() == "write to memory end 1: peer disconnected after 5000 bytes");
  std::vector<uint8_t> buf(8192);
  absl::Status r = b->ReadExact(buf.data(), 8192);
  CHECK(r.code() == absl::StatusCode::kUnavailable);
  CHECK(r.message() == "read from memory end 2: peer disconnected after 5000 bytes");
  CHECK(b->counters().bytes_in == 5000);
}

TEST_CASE("flip fault corrupts exactly the byte at the offset") {
  MemoryPipeOptions o;
  o.first_to_second.flip_byte_at = 4097;
  auto [a, b] = MakePair(o);
  std::vector<uint8_t> data(3 * 4096, 0x11);
  REQUIRE(a->Write(data.data(), 2048).ok());
  REQUIRE(a->Write(data.data() + 2048, data.size() - 2048).ok());
  std::vector<uint8_t> got(data.size());
  REQUIRE(b->ReadExact(got.data(), got.size()).ok());
  for (size_t i = 0; i < got.size(); ++i) {
    if (i == 4097) {
      CHECK(got[i] == (0x11 ^ 0xff));
    } else if (got[i] != 0x11) {
      FAIL("unexpected change at ", i);
    }
  }
}

TEST_CASE("batches from concurrent writers never interleave") {
  MemoryPipeOptions o;
  o.capacity = 4096;  // far smaller than a batch: writers block mid-batch
  o.first_to_second.max_write_chunk = 777;
  auto [a, b] = MakePair(o);
  constexpr int kBatches = 50;
  constexpr size_t kBatch = 20000;
  auto writer = [&, &a = a](uint8_t tag) {
    std::vector<uint8_t> batch(kBatch, tag);
    for (int i = 0; i < kBatches; ++i) CHECK(a->Write(batch.data(), batch.size()).ok());
  };
  std::thread t1(writer, 1), t2(writer, 2);
  std::vector<uint8_t> got(kBatch);
  int count[3] = {};
  for (int i = 0; i < 2 * kBatches; ++i) {
    REQUIRE(b->ReadExact(got.data(), kBatch).ok());
    uint8_t tag = got[0];
    REQUIRE((tag == 1 || tag == 2));
    REQUIRE(std::count(got.begin(), got.end(), tag) == static_cast<long>(kBatch));
    ++count[tag];
  }
  t1.join();
  t2.join();
  CHECK(count[1] == kBatches);
  CHECK(count[2] == kBatches);
}

TEST_CASE("abort wakes a blocked reader; closing one end breaks the other's writes") {
  auto [a, b] = MakePair();
  std::thread reader([&, &b = b] {
    char c;
    CHECK(b->ReadExact(&c, 1).code() == absl::StatusCode::kUnavailable);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b->Abort();
  reader.join();

  auto [c, d] = MakePair();
  REQUIRE(d->Close().ok());
  CHECK(c->Write("x", 1).code() == absl::StatusCode::kUnavailable);
  char buf[1];
  auto n = c->ReadSome(buf, 1);  // d's side shut down: orderly EOF
  REQUIRE(n.ok());
  CHECK(*n == 0);
  MemoryPipeOptions zero;
  zero.capacity = 0;
  CHECK(MemoryChannel::CreatePair(zero).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace procmig
