// LogSink: the agent's log, written to a file descriptor it owns, never through stdio.
//
// There is no global logger: whoever needs to log is handed a LogSink (the preload agent owns the
// process's one). Each line is formatted on the stack by SafeFormat (a printf subset, see
// safe_format.h; the compiler checks arguments) and written with a single write(2), so a line is
// atomic on a pipe and with O_APPEND, and logging takes no lock, makes no allocation and uses no
// stdio: it is safe while application threads are parked holding libc's locks, and from signal
// handlers. A line is
//
//   [<timestamp> ]<prefix> <L> <message>\n
//
// where the timestamp is "2026-11-26T06:18:47.123456Z" (CLOCK_REALTIME, UTC), "[   12.345678]"
// (CLOCK_MONOTONIC seconds) or absent, the prefix is fixed at construction (e.g.
// "procmig[1234]"), and L is D, I, W or E. Newlines and carriage returns inside the message
// become spaces, so one call is always one line. A line longer than kMaxLine bytes is cut and
// ends with kTruncatedMarker.
//
// Writing to a pipe or socket whose reader is gone fails with EPIPE but never raises SIGPIPE in the
// program (send(MSG_NOSIGNAL) for sockets; for pipes SIGPIPE is blocked around the write and a
// SIGPIPE it caused is consumed), since the agent must not kill the program it lives in.
//
// Threads: Log() may be called from any number of threads at once; construction, moving and
// destruction need the caller's exclusion. Ownership: the LogSink closes its fd on destruction.
#ifndef PROCMIG_BASE_LOG_SINK_H_
#define PROCMIG_BASE_LOG_SINK_H_

#include <limits.h>

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace procmig {

enum class LogLevel : uint8_t { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

class LogSink {
 public:
  enum class Timestamp : uint8_t { kRealtimeUtc, kMonotonic, kNone };

  struct Options {
    LogLevel min_level = LogLevel::kInfo;  // lines below it are dropped
    std::string_view prefix = "procmig";   // copied; cut to kMaxPrefix bytes
    bool append_pid = true;                // prefix becomes "procmig[<pid at construction>]"
    Timestamp timestamp = Timestamp::kRealtimeUtc;
  };

  // Lines, newline and marker included, never exceed kMaxLine bytes: below PIPE_BUF, so a line
  // written to a pipe is never interleaved with another writer's.
  static constexpr size_t kMaxLine = 1024;
  static constexpr size_t kMaxPrefix = 64;
  static constexpr std::string_view kTruncatedMarker = "...[truncated]\n";
  static_assert(kMaxLine <= PIPE_BUF);

  // Opens (creating, mode 0600) `path` for appending. Errors name the open failure.
  static absl::StatusOr<LogSink> Open(const char* path, const Options& options);
  // Takes ownership of `fd` (e.g. a pipe or a memfd).
  static LogSink Adopt(int fd, const Options& options);

  LogSink(LogSink&& other) noexcept;
  LogSink& operator=(LogSink&& other) noexcept;
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;
  ~LogSink();

  bool Enabled(LogLevel level) const { return fd_ >= 0 && level >= min_level_; }

  // Returns true when the line was written whole or was filtered out by level; false when
  // write(2) failed or fell short (e.g. a full non-blocking pipe). EINTR is retried.
  bool Log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  bool VLog(LogLevel level, const char* fmt, va_list ap);

  bool Debug(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  bool Info(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  bool Warning(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  bool Error(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  // Builds the line Log() would write (level filter aside) and returns its length. Exposed for
  // callers that batch lines or write them elsewhere.
  size_t FormatLine(LogLevel level, char (&out)[kMaxLine], const char* fmt, va_list ap) const;

  int fd() const { return fd_; }
  std::string_view prefix() const { return {prefix_, prefix_len_}; }

 private:
  LogSink(int fd, const Options& options);

  // How write(2) must be done on this fd, found once with fstat at construction.
  enum class FdKind : uint8_t { kPlain, kPipe, kSocket };
  bool WriteAll(const char* data, size_t n);

  int fd_ = -1;
  FdKind kind_ = FdKind::kPlain;
  LogLevel min_level_ = LogLevel::kInfo;
  Timestamp timestamp_ = Timestamp::kRealtimeUtc;
  // "<prefix>[<pid>]" plus room; immutable after construction.
  char prefix_[kMaxPrefix + 24] = {};
  size_t prefix_len_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_BASE_LOG_SINK_H_
