// PageBitmap: one bit per page of a RAM block (dirty, sent, zero, received...).
//
// The page count is fixed at construction. Storage is either owned (allocated by the
// constructor, for use outside critical sections) or provided by the caller, e.g. from the Arena,
// so the agent can build and use bitmaps while application threads are parked: apart from the
// owning constructor, no method allocates, locks or makes a system call. Runs of set bits are
// visited through a template callback (never std::function) or collected into a caller's array.
//
// Threads: one owner at a time. The single exception, for trackers that record writes from other
// threads or from a signal handler, is SetAtomic(), which may race with HarvestRuns() and
// HarvestCollect(): those take whole words with an atomic exchange, so a concurrently set bit
// is either harvested now or stays set for the next round, never lost (as QEMU's
// bitmap_test_and_clear_atomic); a harvester that sees a bit also sees the setter's writes made
// before it set the bit (release/acquire). Bits past size() in the last word are always zero.
#ifndef PROCMIG_BASE_PAGE_BITMAP_H_
#define PROCMIG_BASE_PAGE_BITMAP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

namespace procmig {

// A maximal run of set bits [first, first + count).
struct PageRun {
  size_t first = 0;
  size_t count = 0;
  friend bool operator==(const PageRun&, const PageRun&) = default;
};

class PageBitmap {
 public:
  static constexpr size_t kBitsPerWord = 64;
  static constexpr size_t WordsFor(size_t n_pages) {
    return (n_pages + kBitsPerWord - 1) / kBitsPerWord;
  }
  static constexpr size_t BytesFor(size_t n_pages) { return WordsFor(n_pages) * sizeof(uint64_t); }

  // An empty bitmap of zero pages.
  PageBitmap() = default;
  // Owns zeroed storage for n_pages bits. Allocates: not for use while threads are parked.
  explicit PageBitmap(size_t n_pages);
  // Uses `storage` (at least WordsFor(n_pages) words, owned by the caller and outliving this
  // object) and clears it. Does not allocate.
  PageBitmap(size_t n_pages, std::span<uint64_t> storage);

  PageBitmap(PageBitmap&& other) noexcept;
  PageBitmap& operator=(PageBitmap&& other) noexcept;
  PageBitmap(const PageBitmap&) = delete;
  PageBitmap& operator=(const PageBitmap&) = delete;
  ~PageBitmap() = default;

  size_t size() const { return n_pages_; }
  std::span<const uint64_t> words() const { return {words_, WordsFor(n_pages_)}; }

  // Single-bit operations; `page` must be < size().
  void Set(size_t page) { words_[page / kBitsPerWord] |= Bit(page); }
  void Clear(size_t page) { words_[page / kBitsPerWord] &= ~Bit(page); }
  bool Test(size_t page) const { return (words_[page / kBitsPerWord] & Bit(page)) != 0; }
  // Returns the old value.
  bool TestAndClear(size_t page);
  // The one method that may run concurrently with HarvestRuns/HarvestCollect (see above).
  void SetAtomic(size_t page) {
    std::atomic_ref<uint64_t>(words_[page / kBitsPerWord])
        .fetch_or(Bit(page), std::memory_order_release);
  }

  // Range operations on [first, first + count), which must lie within [0, size()).
  void SetRange(size_t first, size_t count);
  void ClearRange(size_t first, size_t count);
  void SetAll() { SetRange(0, n_pages_); }
  void ClearAll();

  // Number of set bits, in all of the bitmap or in [first, first + count).
  size_t Count() const { return CountRange(0, n_pages_); }
  size_t CountRange(size_t first, size_t count) const;
  bool Empty() const { return FindNextSet(0) == n_pages_; }

  // First set (clear) bit at or after `from`, or size() if there is none (from >= size() is
  // allowed and returns size()).
  size_t FindNextSet(size_t from) const;
  size_t FindNextClear(size_t from) const;

  // Calls f(first, count) for every maximal run of set bits that starts at or after `from` (a
  // run straddling `from` is cut at `from`), in increasing order. f returns void, or bool where
  // false stops the walk. Returns where to resume: size() once every run was visited, else the
  // page after the last run visited.
  template <typename F>
  size_t ForEachRun(F&& f, size_t from = 0) const {
    return const_cast<PageBitmap*>(this)->Walk<false>(f, from);
  }
  // Like ForEachRun, and clears every run it reports (test-and-clear, word at a time). Bits of a
  // run not yet reported when f stops the walk are left set.
  template <typename F>
  size_t HarvestRuns(F&& f, size_t from = 0) {
    return Walk<true>(f, from);
  }

  // Fills `out` with runs starting at or after `from`, as ForEachRun / HarvestRuns would visit
  // them, until `out` is full. Returns the number stored; *resume (if not null) gets the page to
  // pass as `from` next time (size() when done).
  size_t CollectRuns(std::span<PageRun> out, size_t from = 0, size_t* resume = nullptr) const;
  size_t HarvestCollect(std::span<PageRun> out, size_t from = 0, size_t* resume = nullptr);

 private:
  static constexpr uint64_t Bit(size_t page) { return uint64_t{1} << (page % kBitsPerWord); }
  template <bool kClear, typename F>
  size_t Walk(F& f, size_t from);

  size_t n_pages_ = 0;
  uint64_t* words_ = nullptr;
  std::unique_ptr<uint64_t[]> owned_;
};

// The walk keeps one "open run" that may span words. With kClear, a non-zero word is taken with
// an atomic exchange against zero (so SetAtomic never loses a bit), and if f stops the walk the
// taken but unreported bits of that word are put back with fetch_or.
template <bool kClear, typename F>
size_t PageBitmap::Walk(F& f, size_t from) {
  using Result = std::invoke_result_t<F&, size_t, size_t>;
  static_assert(std::is_same_v<Result, void> || std::is_same_v<Result, bool>,
                "run callback must return void or bool");
  // Returns false when the callback asks to stop.
  auto emit = [&f](size_t first, size_t count) -> bool {
    if constexpr (std::is_same_v<Result, bool>) {
      return f(first, count);
    } else {
      f(first, count);
      return true;
    }
  };
  if (from >= n_pages_) return n_pages_;
  const size_t n_words = WordsFor(n_pages_);
  bool open = false;
  size_t run_first = 0;
  for (size_t wi = from / kBitsPerWord; wi < n_words; ++wi) {
    const uint64_t keep_below =
        (wi == from / kBitsPerWord) ? (uint64_t{1} << (from % kBitsPerWord)) - 1 : 0;
    uint64_t w;
    if constexpr (kClear) {
      std::atomic_ref<uint64_t> ref(words_[wi]);
      w = ref.load(std::memory_order_relaxed) & ~keep_below;
      if (w != 0) {
        // Take the bits at or after `from`; those below it stay.
        w = keep_below == 0 ? ref.exchange(0, std::memory_order_acquire)
                            : ref.fetch_and(keep_below, std::memory_order_acquire) & ~keep_below;
      }
    } else {
      w = words_[wi] & ~keep_below;
    }
    if (w == 0 && !open) continue;
    const size_t base = wi * kBitsPerWord;
    size_t pos = 0;
    while (pos < kBitsPerWord) {
      if (open) {
        uint64_t clear_bits = ~w & (~uint64_t{0} << pos);
        if (clear_bits == 0) break;  // the run continues into the next word
        size_t end = static_cast<size_t>(__builtin_ctzll(clear_bits));
        open = false;
        pos = end;
        if (!emit(run_first, base + end - run_first)) {
          if constexpr (kClear) {
            uint64_t unreported = w & (~uint64_t{0} << pos);
            if (unreported != 0) {
              std::atomic_ref<uint64_t>(words_[wi]).fetch_or(unreported, std::memory_order_relaxed);
            }
          }
          return base + end;
        }
      } else {
        uint64_t set_bits = w & (~uint64_t{0} << pos);
        if (set_bits == 0) break;
        pos = static_cast<size_t>(__builtin_ctzll(set_bits));
        run_first = base + pos;
        open = true;
      }
    }
  }
  if (open) emit(run_first, n_pages_ - run_first);
  return n_pages_;
}

}  // namespace procmig

#endif  // PROCMIG_BASE_PAGE_BITMAP_H_
