// Test helper: a deterministic stream of page-like batches, and a checker that verifies a
// received byte stream against it byte for byte (so any loss, duplication or reordering across
// batch boundaries is caught at its exact offset) plus a crc32c over everything received.
//
// Batch b = a 16-byte header {u64 kBatchTag, u64 b} followed by pages_per_batch 4 KiB pages.
// Pages come from a pool of 61 pages (one in four all zero, the rest pseudo-random); each
// non-zero page has its global page number stamped into bytes 8..15. The writer sends a batch as
// one iovec for the header plus one per page, like the sender will; in odd batches the iovecs
// point at pages scattered in memory (the channel cannot merge them), in even batches at one
// contiguous buffer (the channel merges them into one segment).
#ifndef PROCMIG_TESTS_UNIT_TRANSPORT_PATTERN_STREAM_H_
#define PROCMIG_TESTS_UNIT_TRANSPORT_PATTERN_STREAM_H_

#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "transport/channel.h"

namespace procmig::testing {

inline constexpr size_t kPage = 4096;
inline constexpr uint64_t kBatchTag = 0x6863746162676d70ull;  // "pmgbatch"

inline uint64_t SplitMix(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class PatternStream {
 public:
  static constexpr size_t kPool = 61;
  static constexpr size_t kHeader = 16;
  static constexpr size_t kGap = 64;  // between scattered pages

  PatternStream(uint64_t seed, size_t pages_per_batch)
      : pages_(pages_per_batch),
        pool_(kPool * kPage),
        batch_(kHeader + pages_per_batch * kPage),
        scattered_(kHeader + pages_per_batch * (kPage + kGap)) {
    uint64_t s = seed;
    for (size_t p = 0; p < kPool; ++p) {
      uint8_t* page = &pool_[p * kPage];
      if (p % 4 == 0) continue;  // zero page
      for (size_t i = 0; i < kPage; i += 8) {
        uint64_t v = SplitMix(&s);
        std::memcpy(page + i, &v, 8);
      }
    }
  }

  size_t batch_bytes() const { return batch_.size(); }

  // Fills the internal batch buffer with batch `b` and returns it as header + one iovec per page;
  // data() is the same batch contiguous.
  const std::vector<iovec>& Build(uint64_t b) {
    EncodeFixed64(&batch_[0], kBatchTag);
    EncodeFixed64(&batch_[8], b);
    for (size_t i = 0; i < pages_; ++i) {
      uint64_t global = b * pages_ + i;
      size_t pool_index = (global * 7 + b) % kPool;
      uint8_t* dst = &batch_[kHeader + i * kPage];
      std::memcpy(dst, &pool_[pool_index * kPage], kPage);
      if (pool_index % 4 != 0) EncodeFixed64(dst + 8, global);
    }
    iov_.clear();
    if (b % 2 == 0) {
      iov_.push_back({batch_.data(), kHeader});
      for (size_t i = 0; i < pages_; ++i) iov_.push_back({&batch_[kHeader + i * kPage], kPage});
      return iov_;
    }
    std::memcpy(scattered_.data(), batch_.data(), kHeader);
    iov_.push_back({scattered_.data(), kHeader});
    for (size_t i = 0; i < pages_; ++i) {
      uint8_t* dst = &scattered_[kHeader + kGap + i * (kPage + kGap)];
      std::memcpy(dst, &batch_[kHeader + i * kPage], kPage);
      iov_.push_back({dst, kPage});
    }
    return iov_;
  }
  const uint8_t* data() const { return batch_.data(); }

 private:
  size_t pages_;
  std::vector<uint8_t> pool_;
  std::vector<uint8_t> batch_;
  std::vector<uint8_t> scattered_;
  std::vector<iovec> iov_;
};

// Writes batches [0, count) to `ch` (then Shutdown) and returns the crc32c of all bytes sent.
inline absl::Status WritePattern(Channel& ch, uint64_t seed, size_t pages_per_batch, uint64_t count,
                                 uint32_t* crc) {
  PatternStream p(seed, pages_per_batch);
  uint32_t c = 0;
  for (uint64_t b = 0; b < count; ++b) {
    const auto& iov = p.Build(b);
    c = crc32c::Extend(c, p.data(), p.batch_bytes());
    absl::Status s = ch.WriteV(iov.data(), iov.size());
    if (!s.ok()) return s;
  }
  *crc = c;
  return ch.Shutdown();
}

// Checks a received stream incrementally: Feed() whatever arrived, in order.
class PatternChecker {
 public:
  PatternChecker(uint64_t seed, size_t pages_per_batch) : p_(seed, pages_per_batch) {}

  // For a single channel batches arrive as 0, 1, 2, ...; for one channel of a group they are any
  // subset in any order (`sequential` false), identified by their header and listed in
  // completed() for the caller to check that the group delivered each exactly once.
  absl::Status Feed(const uint8_t* data, size_t n, bool sequential = true) {
    crc_ = crc32c::Extend(crc_, data, n);
    bytes_ += n;
    while (n > 0) {
      if (!have_batch_) {
        // Collect the header first to learn which batch this is.
        size_t take = std::min(n, PatternStream::kHeader - off_);
        std::memcpy(header_ + off_, data, take);
        off_ += take;
        data += take;
        n -= take;
        if (off_ < PatternStream::kHeader) return absl::OkStatus();
        uint64_t tag = DecodeFixed64(header_);
        uint64_t b = DecodeFixed64(header_ + 8);
        uint64_t want = sequential ? next_ : b;
        if (tag != kBatchTag || b != want) {
          return absl::DataLossError(absl::StrCat("batch header at stream offset ",
                                                  bytes_ - n - PatternStream::kHeader, ": tag ",
                                                  tag, " batch ", b, " expected ", want));
        }
        p_.Build(b);
        have_batch_ = true;
        last_ = b;
        continue;
      }
      size_t take = std::min(n, p_.batch_bytes() - off_);
      if (std::memcmp(data, p_.data() + off_, take) != 0) {
        size_t k = 0;
        while (data[k] == p_.data()[off_ + k]) ++k;
        return absl::DataLossError(absl::StrCat("mismatch in batch ", last_, " at byte ", off_ + k,
                                                " (stream offset ", bytes_ - n + k, ")"));
      }
      off_ += take;
      data += take;
      n -= take;
      if (off_ == p_.batch_bytes()) {
        off_ = 0;
        have_batch_ = false;
        ++batches_;
        next_ = last_ + 1;
        completed_.push_back(last_);
      }
    }
    return absl::OkStatus();
  }

  // Reads `ch` to EOF through ReadSome with varying capacities, feeding everything.
  absl::Status Drain(Channel& ch, size_t cap = 200003) {
    std::vector<uint8_t> buf(cap);
    size_t k = 0;
    for (;;) {
      size_t want = cap - (k++ % 7) * (cap / 9);  // odd sizes cross page and batch boundaries
      absl::StatusOr<size_t> n = ch.ReadSome(buf.data(), want);
      if (!n.ok()) return n.status();
      if (*n == 0) return absl::OkStatus();
      absl::Status s = Feed(buf.data(), *n);
      if (!s.ok()) return s;
    }
  }

  bool at_batch_boundary() const { return off_ == 0; }
  const std::vector<uint64_t>& completed() const { return completed_; }
  uint64_t batches() const { return batches_; }
  uint64_t bytes() const { return bytes_; }
  uint32_t crc() const { return crc_; }

 private:
  PatternStream p_;
  uint8_t header_[PatternStream::kHeader] = {};
  size_t off_ = 0;
  bool have_batch_ = false;
  uint64_t next_ = 0;
  uint64_t last_ = 0;
  uint64_t batches_ = 0;
  uint64_t bytes_ = 0;
  uint32_t crc_ = 0;
  std::vector<uint64_t> completed_;
};

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_TRANSPORT_PATTERN_STREAM_H_
