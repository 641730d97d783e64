// MapsSnapshot: /proc/self/maps read into a buffer allocated beforehand, so a tracker can check,
// without allocating (under the layout gate, or with every application thread parked), whether a
// block's range still lines up with the process's mappings before registering it.
//
// Only the address ranges are looked at. Lines are in address order, as the kernel prints them.
//
// Threads: one owner (the tracker's controlling thread).
#ifndef PROCMIG_DIRTY_MAPS_SNAPSHOT_H_
#define PROCMIG_DIRTY_MAPS_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace procmig {

class MapsSnapshot {
 public:
  // Makes room for `bytes` of maps text (allocates; call outside locks and park windows).
  void Reserve(size_t bytes);
  // Reads /proc/self/maps with open/read/close into the buffer. False when it could not be read
  // or did not fit (then truncated() is true and Reserve with more room helps).
  bool Read();
  bool truncated() const { return truncated_; }
  size_t capacity() const { return cap_; }

  // Whether [lo, hi) is mapped without a hole, starts where a mapping starts and ends where one
  // ends: registering or write-protecting it then splits no mapping. False if nothing was read.
  bool CoversExactly(uintptr_t lo, uintptr_t hi) const;

  // Calls fn(lo, hi) for the part of every mapping that lies in [lo, hi), in address order.
  template <typename F>
  void ForEachMappingIn(uintptr_t lo, uintptr_t hi, F&& fn) const {
    for (size_t at = 0; at < len_;) {
      uintptr_t a = 0, b = 0;
      const size_t next = ParseLine(at, &a, &b);
      if (b > lo && a < hi) fn(a > lo ? a : lo, b < hi ? b : hi);
      at = next;
    }
  }

  // For tests: parse this text instead of reading the file.
  void SetTextForTest(const char* text, size_t len);

 private:
  // Parses the line at offset `at` into [*lo, *hi) (0, 0 if it has no range); returns the offset
  // of the next line.
  size_t ParseLine(size_t at, uintptr_t* lo, uintptr_t* hi) const;

  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t len_ = 0;
  bool valid_ = false;
  bool truncated_ = false;
};

}  // namespace procmig

#endif  // PROCMIG_DIRTY_MAPS_SNAPSHOT_H_
