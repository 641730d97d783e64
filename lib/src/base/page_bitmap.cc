#include "base/page_bitmap.h"

#include <cassert>
#include <cstring>
#include <utility>

namespace procmig {
namespace {

constexpr size_t kBits = PageBitmap::kBitsPerWord;

// Bits [lo, hi) of a word, 0 <= lo < hi <= 64.
constexpr uint64_t MaskRange(size_t lo, size_t hi) {
  uint64_t upto_hi = hi == kBits ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return upto_hi & (~uint64_t{0} << lo);
}

}  // namespace

PageBitmap::PageBitmap(size_t n_pages)
    : n_pages_(n_pages), owned_(n_pages == 0 ? nullptr : new uint64_t[WordsFor(n_pages)]()) {
  words_ = owned_.get();
}

PageBitmap::PageBitmap(size_t n_pages, std::span<uint64_t> storage)
    : n_pages_(n_pages), words_(storage.data()) {
  // A caller passing too little storage is a bug in procmig, not an environment failure.
  assert(storage.size() >= WordsFor(n_pages));
  if (n_pages != 0) std::memset(words_, 0, BytesFor(n_pages));
}

PageBitmap::PageBitmap(PageBitmap&& other) noexcept
    : n_pages_(std::exchange(other.n_pages_, 0)),
      words_(std::exchange(other.words_, nullptr)),
      owned_(std::move(other.owned_)) {}

PageBitmap& PageBitmap::operator=(PageBitmap&& other) noexcept {
  if (this != &other) {
    n_pages_ = std::exchange(other.n_pages_, 0);
    words_ = std::exchange(other.words_, nullptr);
    owned_ = std::move(other.owned_);
  }
  return *this;
}

bool PageBitmap::TestAndClear(size_t page) {
  uint64_t& w = words_[page / kBits];
  bool was = (w & Bit(page)) != 0;
  w &= ~Bit(page);
  return was;
}

void PageBitmap::SetRange(size_t first, size_t count) {
  assert(first <= n_pages_ && count <= n_pages_ - first);
  if (count == 0) return;
  size_t last = first + count;  // exclusive
  size_t wi = first / kBits;
  const size_t wend = (last - 1) / kBits;
  if (wi == wend) {
    words_[wi] |= MaskRange(first % kBits, last - wi * kBits);
    return;
  }
  words_[wi++] |= MaskRange(first % kBits, kBits);
  for (; wi < wend; ++wi) words_[wi] = ~uint64_t{0};
  words_[wend] |= MaskRange(0, last - wend * kBits);
}

void PageBitmap::ClearRange(size_t first, size_t count) {
  assert(first <= n_pages_ && count <= n_pages_ - first);
  if (count == 0) return;
  size_t last = first + count;
  size_t wi = first / kBits;
  const size_t wend = (last - 1) / kBits;
  if (wi == wend) {
    words_[wi] &= ~MaskRange(first % kBits, last - wi * kBits);
    return;
  }
  words_[wi++] &= ~MaskRange(first % kBits, kBits);
  for (; wi < wend; ++wi) words_[wi] = 0;
  words_[wend] &= ~MaskRange(0, last - wend * kBits);
}

void PageBitmap::ClearAll() {
  if (n_pages_ != 0) std::memset(words_, 0, BytesFor(n_pages_));
}

size_t PageBitmap::CountRange(size_t first, size_t count) const {
  assert(first <= n_pages_ && count <= n_pages_ - first);
  if (count == 0) return 0;
  size_t last = first + count;
  size_t wi = first / kBits;
  const size_t wend = (last - 1) / kBits;
  if (wi == wend) {
    return static_cast<size_t>(
        __builtin_popcountll(words_[wi] & MaskRange(first % kBits, last - wi * kBits)));
  }
  size_t n =
      static_cast<size_t>(__builtin_popcountll(words_[wi++] & MaskRange(first % kBits, kBits)));
  for (; wi < wend; ++wi) n += static_cast<size_t>(__builtin_popcountll(words_[wi]));
  n += static_cast<size_t>(__builtin_popcountll(words_[wend] & MaskRange(0, last - wend * kBits)));
  return n;
}

size_t PageBitmap::FindNextSet(size_t from) const {
  if (from >= n_pages_) return n_pages_;
  const size_t n_words = WordsFor(n_pages_);
  size_t wi = from / kBits;
  uint64_t w = words_[wi] & (~uint64_t{0} << (from % kBits));
  while (true) {
    if (w != 0) return wi * kBits + static_cast<size_t>(__builtin_ctzll(w));
    if (++wi == n_words) return n_pages_;
    w = words_[wi];
  }
}

size_t PageBitmap::FindNextClear(size_t from) const {
  if (from >= n_pages_) return n_pages_;
  const size_t n_words = WordsFor(n_pages_);
  size_t wi = from / kBits;
  uint64_t w = ~words_[wi] & (~uint64_t{0} << (from % kBits));
  while (true) {
    if (w != 0) {
      // Tail bits past size() read as clear here; cap at size().
      size_t page = wi * kBits + static_cast<size_t>(__builtin_ctzll(w));
      return page < n_pages_ ? page : n_pages_;
    }
    if (++wi == n_words) return n_pages_;
    w = ~words_[wi];
  }
}

size_t PageBitmap::CollectRuns(std::span<PageRun> out, size_t from, size_t* resume) const {
  size_t n = 0;
  // Stops right after storing the run that fills `out`; the walk then returns the page after it.
  auto store = [&](size_t first, size_t count) {
    out[n++] = PageRun{first, count};
    return n < out.size();
  };
  size_t next = out.empty() ? from : ForEachRun(store, from);
  if (resume != nullptr) *resume = next < n_pages_ ? next : n_pages_;
  return n;
}

size_t PageBitmap::HarvestCollect(std::span<PageRun> out, size_t from, size_t* resume) {
  size_t n = 0;
  // As above: no run is cleared without being stored.
  auto store = [&](size_t first, size_t count) {
    out[n++] = PageRun{first, count};
    return n < out.size();
  };
  size_t next = out.empty() ? from : HarvestRuns(store, from);
  if (resume != nullptr) *resume = next < n_pages_ ? next : n_pages_;
  return n;
}

}  // namespace procmig
