#include "transport/memory_channel.h"

#include <algorithm>
#include <condition_variable>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {

struct MemoryChannel::Pipe {
  Pipe(size_t capacity, const MemoryFaults& f) : buf(capacity), faults(f) {}

  std::mutex mu;
  std::condition_variable changed;  // data, space or state changed
  std::vector<uint8_t> buf;         // ring buffer
  size_t head = 0;                  // first unread byte
  size_t size = 0;                  // unread bytes
  uint64_t written = 0;             // stream offset of the next byte written
  bool eof = false;                 // writer shut down: reader gets EOF after the data
  bool broken = false;              // connection reset (fault, abort or a vanished end)
  const MemoryFaults faults;
};

absl::StatusOr<MemoryChannel::Pair> MemoryChannel::CreatePair(const MemoryPipeOptions& options) {
  if (options.capacity == 0) {
    return absl::InvalidArgumentError("memory channel: capacity must be > 0");
  }
  auto a_to_b = std::make_shared<Pipe>(options.capacity, options.first_to_second);
  auto b_to_a = std::make_shared<Pipe>(options.capacity, options.second_to_first);
  Pair pair;
  pair.first.reset(new MemoryChannel("memory end 1", a_to_b, b_to_a));
  pair.second.reset(new MemoryChannel("memory end 2", b_to_a, a_to_b));
  return pair;
}

MemoryChannel::MemoryChannel(std::string name, std::shared_ptr<Pipe> out, std::shared_ptr<Pipe> in)
    : Channel(std::move(name)),
      out_(std::move(out)),
      in_(std::move(in)),
      write_step_(absl::StrCat("write to ", this->name())) {}

MemoryChannel::~MemoryChannel() { (void)Close(); }

absl::Status MemoryChannel::WriteV(const iovec* iov, size_t n) {
  std::lock_guard<std::mutex> batch(write_mu_);
  const std::string& step = write_step_;
  Pipe& p = *out_;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* src = static_cast<const uint8_t*>(iov[i].iov_base);
    size_t left = iov[i].iov_len;
    while (left > 0) {
      std::unique_lock<std::mutex> lock(p.mu);
      p.changed.wait(lock, [&] { return p.broken || p.eof || p.size < p.buf.size(); });
      if (p.broken) {
        return absl::UnavailableError(
            absl::StrCat(step, ": peer disconnected after ", p.written, " bytes"));
      }
      if (p.eof) return absl::UnavailableError(absl::StrCat(step, ": channel was shut down"));
      size_t step_len = std::min(left, p.buf.size() - p.size);
      if (p.faults.max_write_chunk != 0) step_len = std::min(step_len, p.faults.max_write_chunk);
      if (p.faults.disconnect_after != MemoryFaults::kNever) {
        step_len = std::min<uint64_t>(step_len, p.faults.disconnect_after - p.written);
      }
      for (size_t k = 0; k < step_len; ++k) {
        uint8_t b = src[k];
        if (p.written + k == p.faults.flip_byte_at) b ^= 0xff;
        p.buf[(p.head + p.size + k) % p.buf.size()] = b;
      }
      p.size += step_len;
      p.written += step_len;
      src += step_len;
      left -= step_len;
      bytes_out_.fetch_add(step_len, std::memory_order_relaxed);
      if (left > 0) write_resumes_.fetch_add(1, std::memory_order_relaxed);
      if (p.written == p.faults.disconnect_after) p.broken = true;
      p.changed.notify_all();
      if (p.broken) {
        return absl::UnavailableError(
            absl::StrCat(step, ": peer disconnected after ", p.written, " bytes"));
      }
    }
  }
  write_batches_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<size_t> MemoryChannel::ReadLocked(void* buf, size_t cap) {
  Pipe& p = *in_;
  std::unique_lock<std::mutex> lock(p.mu);
  p.changed.wait(lock, [&] { return p.size > 0 || p.eof || p.broken; });
  if (p.size == 0) {
    if (p.broken) {
      return absl::UnavailableError(
          absl::StrCat("read from ", name(), ": peer disconnected after ", p.written, " bytes"));
    }
    return 0;  // orderly EOF
  }
  size_t n = std::min(cap, p.size);
  uint8_t* dst = static_cast<uint8_t*>(buf);
  size_t first = std::min(n, p.buf.size() - p.head);
  std::copy_n(p.buf.data() + p.head, first, dst);
  std::copy_n(p.buf.data(), n - first, dst + first);
  p.head = (p.head + n) % p.buf.size();
  p.size -= n;
  bytes_in_.fetch_add(n, std::memory_order_relaxed);
  p.changed.notify_all();
  return n;
}

absl::StatusOr<size_t> MemoryChannel::ReadSome(void* buf, size_t cap) {
  std::lock_guard<std::mutex> lock(read_mu_);
  if (cap == 0) return absl::InvalidArgumentError(absl::StrCat("read from ", name(), ": cap 0"));
  return ReadLocked(buf, cap);
}

absl::Status MemoryChannel::ReadExact(void* buf, size_t len) {
  std::lock_guard<std::mutex> lock(read_mu_);
  size_t done = 0;
  while (done < len) {
    ASSIGN_OR_RETURN(size_t r, ReadLocked(static_cast<uint8_t*>(buf) + done, len - done));
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("read from ", name(), ": EOF after ", done, " of ", len, " bytes"));
    }
    done += r;
  }
  return absl::OkStatus();
}

absl::Status MemoryChannel::Shutdown() {
  std::lock_guard<std::mutex> lock(out_->mu);
  out_->eof = true;
  out_->changed.notify_all();
  return absl::OkStatus();
}

void MemoryChannel::Abort() {
  for (Pipe* p : {out_.get(), in_.get()}) {
    std::lock_guard<std::mutex> lock(p->mu);
    p->broken = true;
    p->changed.notify_all();
  }
}

absl::Status MemoryChannel::Close() {
  // The peer's writes fail like EPIPE; what we already sent stays readable, then EOF.
  {
    std::lock_guard<std::mutex> lock(in_->mu);
    in_->broken = true;
    in_->size = 0;
    in_->changed.notify_all();
  }
  std::lock_guard<std::mutex> lock(out_->mu);
  out_->eof = true;
  out_->changed.notify_all();
  return absl::OkStatus();
}

}  // namespace procmig
