// Shared by transport_bench's two modes: page-like data, fatal-error helpers, a loopback pair.
#ifndef PROCMIG_BENCH_TRANSPORT_BENCH_UTIL_H_
#define PROCMIG_BENCH_TRANSPORT_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/endpoint.h"

namespace procmig::bench {

constexpr size_t kPage = 4096;
// 32 MiB of distinct pages, plus a tail so any batch of up to 1024 pages starting inside the
// first kPoolPages fits, contiguous or every other page.
constexpr size_t kPoolPages = 8192;
constexpr size_t kPoolTail = 2048;
using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Page p is zero when p % 4 == 1, pseudo-random otherwise: what a process's memory looks like to
// the transport (compressibility does not matter here).
inline bool IsZeroPage(size_t p) { return p % 4 == 1; }
inline std::vector<uint8_t> MakePool() {
  std::vector<uint8_t> pool((kPoolPages + kPoolTail) * kPage);
  uint64_t s = 0x1234567;
  for (size_t p = 0; p < kPoolPages + kPoolTail; ++p) {
    if (IsZeroPage(p)) continue;
    for (size_t i = 0; i < kPage; i += 8) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      std::memcpy(&pool[p * kPage + i], &s, 8);
    }
  }
  return pool;
}

[[noreturn]] inline void Die(const absl::Status& s) {
  std::fprintf(stderr, "transport_bench: %s\n", s.ToString().c_str());
  std::exit(1);
}
template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) Die(v.status());
  return *std::move(v);
}

struct TcpPair {
  UniqueFd client, server;
};
inline TcpPair Loopback(const SocketOptions& so) {
  UniqueFd l = Must(Listen(Must(Endpoint::Parse("127.0.0.1:0")), so));
  Endpoint bound = Must(LocalEndpoint(l.get()));
  TcpPair p;
  p.client = Must(Connect(bound, so));
  p.server = Must(Accept(l.get(), so, 5000));
  return p;
}

}  // namespace procmig::bench

#endif  // PROCMIG_BENCH_TRANSPORT_BENCH_UTIL_H_
