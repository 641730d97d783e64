// Little-endian encoding by hand, with bounds checks on every read.
//
// Nothing in procmig puts a struct on the wire with memcpy: records are built field by field with
// these helpers. ByteReader never reads past its span; a short read sets it to failed and returns
// zero, so a decoder can read a whole header and check ok() once. Neither class allocates except
// ByteWriter growing its own std::string (not used by the agent while threads are parked).
#ifndef PROCMIG_BASE_CODING_H_
#define PROCMIG_BASE_CODING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace procmig {

inline void EncodeFixed16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void EncodeFixed32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void EncodeFixed64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint16_t DecodeFixed16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t DecodeFixed32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t DecodeFixed64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ULEB128 (as QEMU's XBZRLE uses): 7 bits a byte, high bit = more. Returns bytes written (max 10
// for uint64), or 0 if `cap` is too small.
size_t EncodeUleb128(uint8_t* p, size_t cap, uint64_t v);
// Decodes from [p, p+len). Returns bytes consumed, or 0 on truncation or an encoding longer than
// `max_bytes` (an overlong or overflowing value is rejected, never wrapped).
size_t DecodeUleb128(const uint8_t* p, size_t len, uint64_t* v, size_t max_bytes = 10);

// Appends fixed-width little-endian fields to a string.
class ByteWriter {
 public:
  explicit ByteWriter(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Put(v, 2); }
  void U32(uint32_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void Bytes(std::string_view s) { out_->append(s); }
  // A u32 length then the bytes.
  void String(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s);
  }

 private:
  void Put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_->push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string* out_;
};

// Reads fixed-width little-endian fields from a span; sticky failure on any overrun.
class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t len) : p_(p), len_(len) {}
  explicit ByteReader(std::span<const uint8_t> s) : p_(s.data()), len_(s.size()) {}

  uint8_t U8() { return Need(1) ? p_[pos_++] : 0; }
  uint16_t U16() { return Need(2) ? DecodeFixed16(Advance(2)) : 0; }
  uint32_t U32() { return Need(4) ? DecodeFixed32(Advance(4)) : 0; }
  uint64_t U64() { return Need(8) ? DecodeFixed64(Advance(8)) : 0; }
  // Returns a view of the next n bytes, or an empty view (and failure) if fewer remain.
  std::span<const uint8_t> Bytes(size_t n) {
    if (!Need(n)) return {};
    return {Advance(n), n};
  }
  // A u32 length then that many bytes; fails when the length exceeds `max` or the remainder.
  std::string_view String(size_t max) {
    uint32_t n = U32();
    if (!ok_ || n > max) {
      ok_ = false;
      return {};
    }
    auto b = Bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return ok_ ? len_ - pos_ : 0; }
  bool AtEnd() const { return ok_ && pos_ == len_; }

 private:
  bool Need(size_t n) {
    if (!ok_ || len_ - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  const uint8_t* Advance(size_t n) {
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }

  const uint8_t* p_;
  size_t len_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace procmig

#endif  // PROCMIG_BASE_CODING_H_
