// Helpers for the destination-side tests: a stream builder over StreamWriter that also keeps the
// expected final content of every block (the oracle), page encoders for each wire encoding, and
// temporary directories.
#ifndef PROCMIG_TESTS_UNIT_MIGRATION_RECEIVER_TEST_UTIL_H_
#define PROCMIG_TESTS_UNIT_MIGRATION_RECEIVER_TEST_UTIL_H_

#include <dirent.h>
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/crc32c.h"
#include "codec/xbzrle.h"
#include "codec/zlib_codec.h"
#include "wire/stream_writer.h"
#include "wire/wire_format.h"

namespace procmig::testing {

using Bytes = std::vector<uint8_t>;
inline constexpr uint32_t kPs = 4096;

inline wire::Preamble DstPreamble(uint16_t index = 0, uint16_t count = 1) {
  wire::Preamble p;
  p.page_size = kPs;
  p.features =
      wire::kFeatureXbzrle | wire::kFeatureZlib | (count > 1 ? wire::kFeatureMultiChannel : 0);
  for (int i = 0; i < 16; ++i) p.session_id[i] = static_cast<uint8_t>(0x10 + i);
  p.channel_index = index;
  p.channel_count = count;
  return p;
}

// DstPreamble with zero_run records allowed (wire feature bit 3).
inline wire::Preamble ZeroRunPreamble(uint16_t index = 0, uint16_t count = 1) {
  wire::Preamble p = DstPreamble(index, count);
  p.features |= wire::kFeatureZeroRun;
  return p;
}

// A page whose bytes are a function of (seed, offset), never all zero.
inline Bytes PatternPage(uint32_t seed) {
  Bytes p(kPs);
  for (size_t i = 0; i < kPs; ++i) p[i] = static_cast<uint8_t>((seed * 131 + i * 7 + 1) | 1);
  return p;
}

// Builds one channel's stream. Page payloads are copied into `keep_` so they outlive the batch.
class StreamBuilder {
 public:
  explicit StreamBuilder(const wire::Preamble& p) {
    auto w = wire::StreamWriter::Create(p);
    REQUIRE(w.ok());
    w_ = std::move(*w);
  }
  template <typename F>
  void Add(F f) {
    absl::Status s = f(*w_);
    if (absl::IsResourceExhausted(s)) {
      Flush();
      s = f(*w_);
    }
    INFO(w_->DescribeLastError().ToString());
    REQUIRE(s.ok());
  }
  void Flush() {
    for (const iovec& v : w_->batch()) {
      auto* p = static_cast<const uint8_t*>(v.iov_base);
      bytes_.insert(bytes_.end(), p, p + v.iov_len);
    }
    w_->ClearBatch();
  }
  const uint8_t* Keep(Bytes b) {
    keep_.push_back(std::move(b));
    return keep_.back().data();
  }
  // Entries: encoding plus the decoded page (for zero: ignored) and, for xbzrle, the old page.
  wire::PageEntry Zero() { return {wire::PageEncoding::kZero, 0, {}}; }
  wire::PageEntry Raw(const Bytes& page) {
    const uint8_t* p = Keep(page);
    return {wire::PageEncoding::kRaw, 0, {p, kPs}};
  }
  wire::PageEntry Xbzrle(const Bytes& old_page, const Bytes& new_page) {
    Bytes out(xbzrle::MaxEncodedSize(kPs));
    auto n = xbzrle::Encode(old_page.data(), new_page.data(), kPs, out.data(), out.size());
    REQUIRE(n.has_value());
    REQUIRE(*n > 0);
    out.resize(*n);
    const uint8_t* p = Keep(std::move(out));
    return {wire::PageEncoding::kXbzrle, crc32c::Value(new_page.data(), kPs), {p, *n}};
  }
  wire::PageEntry Zlib(const Bytes& page) {
    auto c = ZlibCompressor::Create(6);
    REQUIRE(c.ok());
    Bytes out(ZlibCompressor::MaxCompressedSize(kPs));
    auto n = (*c)->Compress(page.data(), kPs, out.data(), out.size());
    REQUIRE(n.ok());
    REQUIRE(*n <= kPs);
    out.resize(*n);
    const uint8_t* p = Keep(std::move(out));
    return {wire::PageEncoding::kZlib, crc32c::Value(page.data(), kPs), {p, *n}};
  }
  void BlockAdd(uint32_t id, uint64_t start, uint64_t pages, const char* name) {
    Add([&](wire::StreamWriter& w) {
      return w.AddBlockAdd({id, wire::MakeBlockFlags(3, wire::BlockKind::kAnonymous), start,
                            pages * kPs, pages, name});
    });
  }
  void Run(uint32_t id, uint64_t first, std::vector<wire::PageEntry> pages, bool live = false) {
    Add([&](wire::StreamWriter& w) { return w.AddPageRun(id, first, pages, live); });
  }
  void ZeroRun(uint32_t id, uint64_t first, uint32_t count) {
    Add([&](wire::StreamWriter& w) { return w.AddZeroRun({id, count, first}); });
  }
  void Iteration(uint64_t k, bool final = false) {
    Add([&](wire::StreamWriter& w) {
      wire::IterationMarker m;
      m.iteration = k;
      m.final = final;
      return w.AddIteration(m);
    });
  }
  void State(const Bytes& s) {
    const uint8_t* p = Keep(s);
    Add([&](wire::StreamWriter& w) { return w.AddProcessState({p, s.size()}); });
  }
  // The stream's bytes up to here (no end_of_stream).
  const Bytes& SoFar() {
    Flush();
    return bytes_;
  }
  Bytes End(bool aborted = false) {
    Add([&](wire::StreamWriter& w) { return w.AddEndOfStream(aborted); });
    Flush();
    return bytes_;
  }
  wire::StreamWriter& writer() { return *w_; }

 private:
  std::unique_ptr<wire::StreamWriter> w_;
  Bytes bytes_;
  std::deque<Bytes> keep_;
};

// A fresh empty directory under TMPDIR, removed (with one level of contents) on destruction.
class TempDir {
 public:
  TempDir() {
    const char* t = getenv("TMPDIR");
    std::string tmpl = std::string(t != nullptr ? t : "/tmp") + "/procmig_dst_XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { RemoveTree(path_); }
  const std::string& path() const { return path_; }
  static void RemoveTree(const std::string& dir) {
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        std::string p = dir + "/" + n;
        struct stat st;
        if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
          RemoveTree(p);
        } else {
          unlink(p.c_str());
        }
      }
      closedir(d);
    }
    rmdir(dir.c_str());
  }
  // Names in the directory, sorted.
  std::vector<std::string> List(const std::string& sub = "") const {
    std::vector<std::string> out;
    if (DIR* d = opendir((path_ + sub).c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") out.push_back(n);
      }
      closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_MIGRATION_RECEIVER_TEST_UTIL_H_
