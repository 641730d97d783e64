// Runs park_target under LD_PRELOAD=libprocmig_preload.so and drives its agent through the real
// control socket: a checkpoint --leave-running (every thread parked, contexts captured, the
// program resumes: a read(), nanosleep loops, a futex wait and an all-signals-blocked thread all
// carry on correctly), a migration (the program exits 0 after the ack, nothing more runs), and a
// receiver that vanishes before the ack (the program runs on unharmed). Then churn_target: the
// memory-layout interposers keep glibc's semantics, and checkpoints and a migration succeed while
// three threads map, unmap, grow, shrink, move, protect and discard memory as fast as they can
// (the layout gate keeps those changes and the tracker apart; each thread checks its memory).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "migration/process_state.h"
#include "procmig/control.h"
#include "wire/stream_reader.h"
#include "wire/stream_writer.h"

extern char** environ;

namespace procmig {
namespace {

struct Target {
  pid_t pid = -1;
  int in = -1;   // its stdin
  int out = -1;  // its stdout
  std::string dir, control;
};

Target Start(const char* path = PROCMIG_TARGET_PATH) {
  Target t;
  char tmpl[] = "/tmp/procmig-preload-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  t.dir = tmpl;
  t.control = t.dir + "/ctl.sock";
  int in[2], out[2];
  REQUIRE(pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  t.pid = fork();
  REQUIRE(t.pid >= 0);
  if (t.pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    // Nothing else open: inherited descriptors would count as the program's own resources.
    for (int fd = 3; fd < 1024; ++fd) close(fd);
    setenv("LD_PRELOAD", PROCMIG_PRELOAD_PATH, 1);
    setenv("PROCMIG_CONTROL", t.control.c_str(), 1);
    setenv("PROCMIG_LOG", (t.dir + "/agent.log").c_str(), 1);
    execl(path, path, nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  t.in = in[1];
  t.out = out[0];
  std::string first;
  char c;
  while (read(t.out, &c, 1) == 1 && c != '\n') first.push_back(c);
  REQUIRE(first == "ready");
  return t;
}

std::string ReadAll(int fd) {
  std::string s;
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

// A receiver: one connection, the group handshake, the stream through StreamReader, then an ack
// (or, with ack = false, a close before it; with stall = true, neither: it holds the connection
// open, reading, until the sender breaks it).
struct Receiver {
  int listen_fd = -1;
  uint16_t port = 0;
  bool ack = true;
  bool stall = false;
  std::optional<ProcessStateRecord> state;
  absl::Status status;
  std::thread thread;

  void Start() {
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(listen_fd, 4) == 0);
    socklen_t len = sizeof a;
    getsockname(listen_fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    thread = std::thread([this] { Run(); });
  }
  void Run() {
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    uint8_t hs[24];
    size_t got = 0;
    while (got < sizeof hs) {
      ssize_t n = read(fd, hs + got, sizeof hs - got);
      if (n <= 0) return;
      got += static_cast<size_t>(n);
    }
    wire::StreamReader reader;
    std::vector<uint8_t> buf(1 << 16);
    std::array<uint8_t, 16> session{};
    // The reverse stream: one preamble, then acks (the restore check's verdict, the final ack).
    std::unique_ptr<wire::StreamWriter> reverse;
    auto send_ack = [&](wire::AckKind kind, uint64_t value) {
      if (reverse == nullptr) {
        wire::Preamble pre;
        pre.direction = wire::Direction::kReverse;
        pre.session_id = session;
        reverse = std::move(*wire::StreamWriter::Create(pre));
      }
      (void)reverse->AddAck({kind, value});
      auto b = reverse->batch();
      (void)!writev(fd, b.data(), static_cast<int>(b.size()));
      reverse->ClearBatch();
    };
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n <= 0) {
        status = absl::UnavailableError("receiver: stream cut");
        close(fd);
        return;
      }
      status = reader.Feed({buf.data(), static_cast<size_t>(n)});
      while (status.ok()) {
        auto rec = reader.Next();
        if (!rec.ok()) {
          status = rec.status();
          break;
        }
        if (*rec == nullptr) break;
        if (auto* p = std::get_if<wire::Preamble>(&(*rec)->body)) session = p->session_id;
        if (std::get_if<wire::RestoreCheck>(&(*rec)->body) != nullptr) {
          send_ack(wire::AckKind::kRestoreChecked, 0);  // stored, not checked
        }
        if (auto* ps = std::get_if<wire::ProcessState>(&(*rec)->body)) {
          auto d = DecodeProcessState(ps->data);
          if (d.ok()) state = *d;
        }
        if (std::get_if<wire::EndOfStream>(&(*rec)->body) != nullptr) {
          while (stall && read(fd, buf.data(), buf.size()) > 0) {
          }
          if (ack && !stall) send_ack(wire::AckKind::kEndOfStream, 0);
          close(fd);
          return;
        }
      }
      if (!status.ok()) {
        close(fd);
        return;
      }
    }
  }
  ~Receiver() {
    if (thread.joinable()) thread.join();
    if (listen_fd >= 0) close(listen_fd);
  }
};

// Sends one request and returns the reply lines up to DONE/ERROR.
std::vector<ControlMessage> Control(const Target& t, const ControlMessage& req) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strcpy(a.sun_path, t.control.c_str());
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string line = EncodeControl(req);
  REQUIRE(write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  std::vector<ControlMessage> out;
  std::string acc;
  char c;
  while (read(fd, &c, 1) == 1) {
    if (c != '\n') {
      acc.push_back(c);
      continue;
    }
    auto m = DecodeControl(acc);
    REQUIRE_MESSAGE(m.ok(), acc);
    out.push_back(*m);
    acc.clear();
    if (m->verb == ControlVerb::kDone || m->verb == ControlVerb::kError) break;
  }
  close(fd);
  return out;
}

ControlMessage Migrate(uint16_t port, MigrationMode mode, bool leave_running) {
  ControlMessage m;
  m.verb = ControlVerb::kMigrate;
  m.options.mode = mode;
  m.options.leave_running = leave_running;
  m.options.target = "127.0.0.1:" + std::to_string(port);
  m.options.downtime_limit_ms = 50;
  return m;
}

int Finish(Target& t, std::string* output) {
  REQUIRE(write(t.in, "go\n", 3) == 3);
  close(t.in);
  *output = ReadAll(t.out);
  close(t.out);
  int st = 0;
  REQUIRE(waitpid(t.pid, &st, 0) == t.pid);
  return st;
}

// Lets the program finish and checks it ran on unharmed: its self-check printed PASS and it
// exited 0. Returns what it printed.
std::string ExpectPassed(Target& t) {
  std::string out;
  int st = Finish(t, &out);
  INFO(out);
  CHECK(out.rfind("PASS", 0) == 0);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  return out;
}

TEST_CASE("checkpoint --leave-running parks every thread and they all resume correctly") {
  Target t = Start();
  Receiver rx;
  rx.Start();
  std::vector<ControlMessage> replies =
      Control(t, Migrate(rx.port, MigrationMode::kCheckpoint, true));
  rx.thread.join();
  REQUIRE(!replies.empty());
  INFO(replies.back().error_message);
  CHECK(replies.back().verb == ControlVerb::kDone);
  REQUIRE(rx.status.ok());
  REQUIRE(rx.state.has_value());
  // main + reader + sleeper + waiter + blocker, and the agent's sentinel (parked and migrated
  // like them, so a restored copy can start its agent again); the agent thread is never parked.
  CHECK(rx.state->threads.size() == 6);
  bool main_seen = false;
  for (const ThreadContext& c : rx.state->threads) {
    main_seen |= c.tid == static_cast<uint32_t>(t.pid);
    CHECK(c.rsp != 0);
    CHECK(c.rip != 0);
    CHECK(c.fs_base != 0);
    CHECK(c.ucontext != 0);
    CHECK(c.tid_address != 0);
  }
  CHECK(main_seen);
  CHECK(rx.state->pid == static_cast<uint32_t>(t.pid));
  ExpectPassed(t);
}

TEST_CASE("a migration ends the program with status 0 after the ack, with nothing more run") {
  Target t = Start();
  Receiver rx;
  rx.Start();
  std::vector<ControlMessage> replies =
      Control(t, Migrate(rx.port, MigrationMode::kMigrate, false));
  rx.thread.join();
  REQUIRE(!replies.empty());
  INFO(replies.back().error_message);
  CHECK(replies.back().verb == ControlVerb::kDone);
  CHECK(replies.back().stats.phase == MigrationPhase::kDone);
  std::string out;
  int st = 0;
  REQUIRE(waitpid(t.pid, &st, 0) == t.pid);
  out = ReadAll(t.out);
  CHECK(out.empty());  // never printed PASS: it was parked, then ended
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

TEST_CASE("a receiver that closes before the ack leaves the program running unharmed") {
  Target t = Start();
  Receiver rx;
  rx.ack = false;
  rx.Start();
  std::vector<ControlMessage> replies =
      Control(t, Migrate(rx.port, MigrationMode::kMigrate, false));
  rx.thread.join();
  REQUIRE(!replies.empty());
  CHECK(replies.back().verb == ControlVerb::kError);
  ExpectPassed(t);
}

TEST_CASE("a receiver that never acks: after the ack timeout the program runs on unharmed") {
  Target t = Start();
  Receiver rx;
  rx.stall = true;
  rx.Start();
  ControlMessage req = Migrate(rx.port, MigrationMode::kMigrate, false);
  req.options.final_timeout_ms = 1500;
  std::vector<ControlMessage> replies = Control(t, req);
  rx.thread.join();
  REQUIRE(!replies.empty());
  CHECK(replies.back().verb == ControlVerb::kError);
  INFO(replies.back().error_message);
  CHECK(replies.back().error_message.find("final phase: no report within 1500 ms, its channels "
                                          "aborted") != std::string::npos);
  CHECK(rx.state.has_value());  // it had everything but the ack
  ExpectPassed(t);
}

TEST_CASE("the mprotect tracker is refused for a whole program, which runs on unharmed") {
  Target t = Start();
  Receiver rx;
  rx.Start();
  ControlMessage req = Migrate(rx.port, MigrationMode::kMigrate, false);
  req.options.tracker = "mprotect";
  std::vector<ControlMessage> replies = Control(t, req);
  REQUIRE(!replies.empty());
  CHECK(replies.back().verb == ControlVerb::kError);
  INFO(replies.back().error_message);
  CHECK(replies.back().error_message.find("forced backend mprotect failed its probe: not safe "
                                          "for a whole program") != std::string::npos);
  // Ends the receiver's accept too, should the refusal have come before the sender connected.
  shutdown(rx.listen_fd, SHUT_RDWR);
  rx.thread.join();
  ExpectPassed(t);
}

TEST_CASE("checkpoints while threads churn mmap/munmap/mremap/mprotect/madvise all succeed") {
  Target t = Start(PROCMIG_CHURN_TARGET_PATH);  // "ready": the interposers' semantics held
  for (int round = 0; round < 3; ++round) {
    Receiver rx;
    rx.Start();
    std::vector<ControlMessage> replies =
        Control(t, Migrate(rx.port, MigrationMode::kCheckpoint, true));
    rx.thread.join();
    REQUIRE(!replies.empty());
    INFO("round " << round << ": " << replies.back().error_message);
    CHECK(replies.back().verb == ControlVerb::kDone);
    CHECK(rx.status.ok());
    CHECK(rx.state.has_value());
  }
  MESSAGE("churn target: " << ExpectPassed(t));
}

TEST_CASE("a migration while threads churn mmap/munmap/mremap/mprotect/madvise succeeds") {
  Target t = Start(PROCMIG_CHURN_TARGET_PATH);
  Receiver rx;
  rx.Start();
  std::vector<ControlMessage> replies =
      Control(t, Migrate(rx.port, MigrationMode::kMigrate, false));
  rx.thread.join();
  REQUIRE(!replies.empty());
  INFO(replies.back().error_message);
  CHECK(replies.back().verb == ControlVerb::kDone);
  int st = 0;
  REQUIRE(waitpid(t.pid, &st, 0) == t.pid);
  CHECK(ReadAll(t.out).empty());  // parked, then ended after the ack
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

}  // namespace
}  // namespace procmig
