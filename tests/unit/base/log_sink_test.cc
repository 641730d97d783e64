#include "base/log_sink.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace procmig {
namespace {

LogSink::Options Plain(LogLevel min = LogLevel::kDebug) {
  LogSink::Options o;
  o.min_level = min;
  o.prefix = "procmig";
  o.append_pid = false;
  o.timestamp = LogSink::Timestamp::kNone;
  return o;
}

// A memfd the sink writes to; Contents() reads everything written so far.
struct Memfd {
  int fd = memfd_create("log_sink_test", MFD_CLOEXEC);
  std::string Contents() const {
    std::string s;
    char buf[4096];
    off_t off = 0;
    ssize_t r;
    while ((r = pread(fd, buf, sizeof buf, off)) > 0) {
      s.append(buf, static_cast<size_t>(r));
      off += r;
    }
    return s;
  }
};

// The sink gets a dup so that the test keeps its own descriptor after the sink closes its.
LogSink SinkOn(const Memfd& m, const LogSink::Options& o) { return LogSink::Adopt(dup(m.fd), o); }

TEST_CASE("lines have the exact documented bytes") {
  Memfd m;
  REQUIRE(m.fd >= 0);
  {
    LogSink sink = SinkOn(m, Plain());
    CHECK(sink.Info("hello %d", 42));
    CHECK(sink.Debug("d"));
    CHECK(sink.Warning("w %s", "x"));
    CHECK(sink.Error("e"));
    CHECK(sink.Log(LogLevel::kInfo, "via Log"));
  }
  CHECK(m.Contents() ==
        "procmig I hello 42\nprocmig D d\nprocmig W w x\nprocmig E e\nprocmig I via Log\n");
}

TEST_CASE("every supported format through the sink") {
  Memfd m;
  LogSink sink = SinkOn(m, Plain());
  CHECK(sink.Info("%s %d %u %ld %lu %llu %zu %x %lx %p %c %% %5d|%-3d|%03x|%.2s", "str", -3, 3u,
                  -4L, 5UL, 6ULL, size_t{7}, 0xabu, 0x7fff0000ul, reinterpret_cast<void*>(0x1000),
                  'c', 9, 8, 0xfu, "xyz"));
  CHECK(m.Contents() == "procmig I str -3 3 -4 5 6 7 ab 7fff0000 0x1000 c %     9|8  |00f|xy\n");
}

TEST_CASE("the level filter drops lower levels") {
  Memfd m;
  LogSink sink = SinkOn(m, Plain(LogLevel::kWarning));
  CHECK_FALSE(sink.Enabled(LogLevel::kInfo));
  CHECK(sink.Enabled(LogLevel::kError));
  CHECK(sink.Debug("no"));  // filtered lines count as success
  CHECK(sink.Info("no"));
  CHECK(sink.Warning("yes"));
  CHECK(sink.Error("yes too"));
  CHECK(m.Contents() == "procmig W yes\nprocmig E yes too\n");
}

TEST_CASE("the prefix carries the pid and is cut at kMaxPrefix") {
  Memfd m;
  LogSink::Options o = Plain();
  o.append_pid = true;
  {
    LogSink sink = SinkOn(m, o);
    sink.Info("x");
  }
  CHECK(m.Contents() == "procmig[" + std::to_string(getpid()) + "] I x\n");

  std::string long_prefix(100, 'p');
  o.prefix = long_prefix;
  o.append_pid = false;
  LogSink sink = LogSink::Adopt(-1, o);
  CHECK(sink.prefix() == std::string(LogSink::kMaxPrefix, 'p'));
  CHECK_FALSE(sink.Enabled(LogLevel::kError));  // no fd: nothing is enabled
}

TEST_CASE("newlines inside a message do not split the line") {
  Memfd m;
  LogSink sink = SinkOn(m, Plain());
  sink.Info("a\nb\r%s", "c\nd");
  CHECK(m.Contents() == "procmig I a b c d\n");
}

TEST_CASE("long lines are cut to kMaxLine with a marker; a line that fits is not") {
  const std::string head = "procmig I ";
  const size_t room = LogSink::kMaxLine - head.size() - 1;  // the newline
  Memfd m;
  LogSink sink = SinkOn(m, Plain());
  std::string fits(room, 'f');
  sink.Info("%s", fits.c_str());
  std::string over(room + 1, 'o');
  sink.Info("%s", over.c_str());
  std::string huge(5000, 'h');
  sink.Info("%s and %d", huge.c_str(), 5);
  const std::string out = m.Contents();
  REQUIRE(out.size() == 3 * LogSink::kMaxLine);
  CHECK(out.substr(0, LogSink::kMaxLine) == head + fits + "\n");
  const std::string marker(LogSink::kTruncatedMarker);
  std::string want_over = head + over.substr(0, room + 1 - marker.size()) + marker;
  CHECK(want_over.size() == LogSink::kMaxLine);
  CHECK(out.substr(LogSink::kMaxLine, LogSink::kMaxLine) == want_over);
  std::string third = out.substr(2 * LogSink::kMaxLine);
  CHECK(third.compare(0, head.size() + 10, head + std::string(10, 'h')) == 0);
  CHECK(third.substr(third.size() - marker.size()) == marker);
}

TEST_CASE("realtime timestamps are UTC ISO 8601 close to now; monotonic ones are seconds") {
  Memfd m;
  LogSink::Options o = Plain();
  o.timestamp = LogSink::Timestamp::kRealtimeUtc;
  // Not time(): glibc reads CLOCK_REALTIME_COARSE there, which lags the
  // CLOCK_REALTIME the sink stamps with by up to a tick.
  auto realtime_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
  };
  time_t before = realtime_now();
  {
    LogSink sink = SinkOn(m, o);
    sink.Info("t");
  }
  time_t after = realtime_now();
  std::string line = m.Contents();
  REQUIRE(line.size() == 27 + 1 + std::string("procmig I t\n").size());
  CHECK(line.substr(27) == " procmig I t\n");
  struct tm tm {};
  const char* rest = strptime(line.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  REQUIRE(rest != nullptr);
  CHECK(std::string(rest, 8) == std::string(".") + line.substr(20, 6) + "Z");
  time_t stamped = timegm(&tm);
  CHECK(stamped >= before);
  CHECK(stamped <= after);

  Memfd m2;
  o.timestamp = LogSink::Timestamp::kMonotonic;
  {
    LogSink sink = SinkOn(m2, o);
    sink.Info("t");
  }
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  std::string mono = m2.Contents();
  long long sec = 0;
  long usec = -1;
  char tail[32] = {};
  REQUIRE(std::sscanf(mono.c_str(), "[%lld.%6ld] %31[^\n]", &sec, &usec, tail) == 3);
  CHECK(std::string(tail) == "procmig I t");
  CHECK(sec <= now.tv_sec);
  CHECK(sec >= now.tv_sec - 5);
  CHECK(usec >= 0);
  CHECK(mono[mono.find('.') + 7] == ']');
}

TEST_CASE("Open appends to a 0600 file; its errors name the step and the cause") {
  char dir[] = "/tmp/log_sink_test.XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/agent.log";
  {
    auto a = LogSink::Open(path.c_str(), Plain());
    REQUIRE(a.ok());
    auto b = LogSink::Open(path.c_str(), Plain());
    REQUIRE(b.ok());
    a->Info("one");
    b->Info("two");
    a->Info("three");
  }
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  int fd = open(path.c_str(), O_RDONLY);
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  CHECK(std::string(buf, static_cast<size_t>(n)) ==
        "procmig I one\nprocmig I two\nprocmig I three\n");
  unlink(path.c_str());
  rmdir(dir);

  auto missing = LogSink::Open("/nonexistent-dir/agent.log", Plain());
  REQUIRE_FALSE(missing.ok());
  CHECK(std::string(missing.status().message()) ==
        "open log file /nonexistent-dir/agent.log: ENOENT (No such file or directory)");
}

TEST_CASE("a broken pipe fails the write without SIGPIPE and keeps errno") {
  int p[2];
  REQUIRE(pipe(p) == 0);
  close(p[0]);
  LogSink sink = LogSink::Adopt(p[1], Plain());
  errno = 1234;
  // With SIGPIPE at its default action, a raised SIGPIPE would kill this test binary.
  CHECK_FALSE(sink.Info("nobody reads this"));
  CHECK(errno == 1234);
  sigset_t pending;
  sigpending(&pending);
  CHECK_FALSE(sigismember(&pending, SIGPIPE));
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  CHECK_FALSE(sigismember(&mask, SIGPIPE));  // the mask is restored

  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  close(sv[0]);
  LogSink sock = LogSink::Adopt(sv[1], Plain());
  CHECK_FALSE(sock.Info("nobody reads this either"));
}

TEST_CASE("lines from concurrent threads on one pipe never interleave") {
  int p[2];
  REQUIRE(pipe(p) == 0);
  LogSink sink = LogSink::Adopt(p[1], Plain());
  constexpr int kThreads = 4, kLines = 300;
  std::string got;
  std::thread reader([&] {
    char buf[65536];
    ssize_t r;
    while ((r = read(p[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(r));
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&sink, t] {
      std::string body(900, static_cast<char>('a' + t));
      for (int i = 0; i < kLines; ++i) sink.Info("%d %s %d", t, body.c_str(), i);
    });
  }
  for (auto& w : writers) w.join();
  { LogSink closing = std::move(sink); }  // closes the write end so the reader sees EOF
  reader.join();
  close(p[0]);
  size_t lines = 0;
  int next[kThreads] = {};
  for (size_t pos = 0; pos < got.size();) {
    size_t nl = got.find('\n', pos);
    REQUIRE(nl != std::string::npos);
    std::string line = got.substr(pos, nl - pos);
    int t = line[10] - '0';
    REQUIRE(t >= 0);
    REQUIRE(t < kThreads);
    REQUIRE(line == "procmig I " + std::to_string(t) + " " +
                        std::string(900, static_cast<char>('a' + t)) + " " +
                        std::to_string(next[t]++));
    ++lines;
    pos = nl + 1;
  }
  CHECK(lines == kThreads * kLines);
}

TEST_CASE("logging never calls malloc") {
  Memfd m;
  LogSink::Options o = Plain();
  o.timestamp = LogSink::Timestamp::kRealtimeUtc;
  LogSink sink = SinkOn(m, o);
  sink.Info("warm up");
  struct mallinfo2 before = mallinfo2();
  for (int i = 0; i < 2000; ++i) sink.Info("line %d of %s at %p", i, "many", &o);
  struct mallinfo2 after = mallinfo2();
  CHECK(after.uordblks == before.uordblks);
  CHECK(m.Contents().size() > 2000 * 30);
}

}  // namespace
}  // namespace procmig
