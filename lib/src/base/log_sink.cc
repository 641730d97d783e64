#include "base/log_sink.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/safe_format.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

constexpr char kLevelLetter[] = {'D', 'I', 'W', 'E'};

// The kernel's sigset size. Raw syscalls rather than pthread_sigmask/sigtimedwait so that the
// agent's own sigprocmask interposers (DESIGN.md) never see the sink's bookkeeping.
constexpr long kKernelSigsetBytes = 8;

long SigMask(int how, const sigset_t* set, sigset_t* old) {
  return syscall(SYS_rt_sigprocmask, how, set, old, kKernelSigsetBytes);
}

}  // namespace

absl::StatusOr<LogSink> LogSink::Open(const char* path, const Options& options) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open log file ", path), errno);
  return LogSink(fd, options);
}

LogSink LogSink::Adopt(int fd, const Options& options) { return LogSink(fd, options); }

LogSink::LogSink(int fd, const Options& options)
    : fd_(fd), min_level_(options.min_level), timestamp_(options.timestamp) {
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0) {
    if (S_ISFIFO(st.st_mode)) kind_ = FdKind::kPipe;
    if (S_ISSOCK(st.st_mode)) kind_ = FdKind::kSocket;
  }
  size_t n = options.prefix.size() < kMaxPrefix ? options.prefix.size() : kMaxPrefix;
  std::memcpy(prefix_, options.prefix.data(), n);
  if (options.append_pid) {
    n += SafeFormat(prefix_ + n, sizeof prefix_ - n, nullptr, "[%d]", static_cast<int>(getpid()));
  }
  prefix_len_ = n;
}

LogSink::LogSink(LogSink&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      kind_(other.kind_),
      min_level_(other.min_level_),
      timestamp_(other.timestamp_),
      prefix_len_(other.prefix_len_) {
  std::memcpy(prefix_, other.prefix_, sizeof prefix_);
}

LogSink& LogSink::operator=(LogSink&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    kind_ = other.kind_;
    min_level_ = other.min_level_;
    timestamp_ = other.timestamp_;
    std::memcpy(prefix_, other.prefix_, sizeof prefix_);
    prefix_len_ = other.prefix_len_;
  }
  return *this;
}

LogSink::~LogSink() {
  if (fd_ >= 0) close(fd_);
}

size_t LogSink::FormatLine(LogLevel level, char (&out)[kMaxLine], const char* fmt,
                           va_list ap) const {
  size_t n = 0;
  timespec ts{};
  switch (timestamp_) {
    case Timestamp::kRealtimeUtc:
      clock_gettime(CLOCK_REALTIME, &ts);  // vDSO: no syscall, no lock
      FormatUtcTimestamp(ts, out);
      n = kUtcTimestampLength;
      out[n++] = ' ';
      break;
    case Timestamp::kMonotonic:
      clock_gettime(CLOCK_MONOTONIC, &ts);
      n = SafeFormat(out, kMaxLine, nullptr, "[%5lld.%06ld] ", static_cast<long long>(ts.tv_sec),
                     ts.tv_nsec / 1000);
      break;
    case Timestamp::kNone:
      break;
  }
  std::memcpy(out + n, prefix_, prefix_len_);
  n += prefix_len_;
  out[n++] = ' ';
  auto li = static_cast<size_t>(level);
  out[n++] = li < sizeof kLevelLetter ? kLevelLetter[li] : '?';
  out[n++] = ' ';

  const size_t message_start = n;
  bool truncated = false;
  n += SafeVFormat(out + n, kMaxLine - n - 1, &truncated, fmt, ap);  // room for the newline
  for (size_t i = message_start; i < n; ++i) {
    if (out[i] == '\n' || out[i] == '\r') out[i] = ' ';
  }
  if (truncated) {
    n = kMaxLine - kTruncatedMarker.size();
    std::memcpy(out + n, kTruncatedMarker.data(), kTruncatedMarker.size());
    return kMaxLine;
  }
  out[n++] = '\n';
  return n;
}

bool LogSink::WriteAll(const char* data, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t r = kind_ == FdKind::kSocket ? send(fd_, data + off, n - off, MSG_NOSIGNAL)
                                         : write(fd_, data + off, n - off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    // A short write (disk full, a signal mid-write to a file) would leave half a line; finish
    // it rather than glue the next line to it.
    off += static_cast<size_t>(r);
  }
  return true;
}

bool LogSink::VLog(LogLevel level, const char* fmt, va_list ap) {
  if (!Enabled(level)) return true;
  // Logging must not disturb errno: callers log from interposers and signal handlers.
  const int saved_errno = errno;
  char line[kMaxLine];
  const size_t n = FormatLine(level, line, fmt, ap);
  bool ok;
  if (kind_ != FdKind::kPipe) {
    ok = WriteAll(line, n);
  } else {
    // Block SIGPIPE in this thread for the write; if the write raised one that was not already
    // pending, take it back with a zero-timeout sigtimedwait before unblocking.
    sigset_t pipe_set, old_mask, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    SigMask(SIG_BLOCK, &pipe_set, &old_mask);
    sigemptyset(&pending);
    syscall(SYS_rt_sigpending, &pending, kKernelSigsetBytes);
    const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    ok = WriteAll(line, n);
    if (!ok && errno == EPIPE && !was_pending) {
      timespec zero{};
      syscall(SYS_rt_sigtimedwait, &pipe_set, nullptr, &zero, kKernelSigsetBytes);
    }
    SigMask(SIG_SETMASK, &old_mask, nullptr);
  }
  errno = saved_errno;
  return ok;
}

bool LogSink::Log(LogLevel level, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  bool ok = VLog(level, fmt, ap);
  va_end(ap);
  return ok;
}

#define PROCMIG_LOG_SINK_LEVEL_(Name, level) \
  bool LogSink::Name(const char* fmt, ...) { \
    va_list ap;                              \
    va_start(ap, fmt);                       \
    bool ok = VLog(level, fmt, ap);          \
    va_end(ap);                              \
    return ok;                               \
  }
PROCMIG_LOG_SINK_LEVEL_(Debug, LogLevel::kDebug)
PROCMIG_LOG_SINK_LEVEL_(Info, LogLevel::kInfo)
PROCMIG_LOG_SINK_LEVEL_(Warning, LogLevel::kWarning)
PROCMIG_LOG_SINK_LEVEL_(Error, LogLevel::kError)
#undef PROCMIG_LOG_SINK_LEVEL_

}  // namespace procmig
