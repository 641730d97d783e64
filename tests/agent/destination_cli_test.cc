// The real `procmig` binary: run, migrate, checkpoint, status, cancel, receive, inspect DIR.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/run_command.h"
#include "migration/image_store.h"
#include "transport/channel_group.h"
#include "transport/endpoint.h"
#include "unit/migration/receiver_test_util.h"
#include "wire/stream_reader.h"

namespace procmig {
namespace {

using testing::Bytes;
using testing::CommandResult;
using testing::kPs;
using testing::RunCommand;

CommandResult Procmig(std::vector<std::string> args) {
  args.insert(args.begin(), PROCMIG_BIN);
  return RunCommand(args);
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("every new subcommand answers --help with its usage") {
  for (const char* sub :
       {"run", "migrate", "checkpoint", "status", "cancel", "receive", "restore"}) {
    CommandResult r = Procmig({sub, "--help"});
    CHECK(r.exit_code == 0);
    CHECK(r.out.starts_with(absl::StrCat("usage: procmig ", sub)));
    CHECK(r.err.empty());
  }
  CHECK(Contains(Procmig({"receive", "--help"}).out, "DIR/<session-id>/"));
  CHECK(Contains(Procmig({"inspect", "--help"}).out, "usage: procmig inspect FILE|DIR"));
}

TEST_CASE("usage errors exit 2 and say what was wrong") {
  CommandResult r = Procmig({"receive", "--listen", "127.0.0.1:0", "--detach"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig receive: --detach goes with --once (a live restore of one session)\n");
  r = Procmig({"restore"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig restore: needs exactly one image DIR\n");
  r = Procmig({"restore", "/nonexistent-procmig-image"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.err, "/nonexistent-procmig-image/MANIFEST"));
  r = Procmig({"receive", "--store", "/tmp/x"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig receive: --listen ADDR:PORT is required\n");
  r = Procmig({"migrate", "123"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig migrate: --to is required (see --help)\n");
  r = Procmig({"migrate", "--to", "127.0.0.1:1"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig migrate: needs exactly one PID (see --help)\n");
  r = Procmig({"migrate", "1", "--to", "/tmp/dir"});
  CHECK(r.exit_code == 2);
  CHECK(Contains(r.err, "use checkpoint for a directory"));
  r = Procmig({"migrate", "1", "--to", "h:1", "--compress", "12"});
  CHECK(r.exit_code == 2);
  r = Procmig({"status"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig status: needs exactly one PID (see --help)\n");
  r = Procmig({"cancel", "abc"});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "procmig cancel: PID must be a positive number\n");
  r = Procmig({"run"});
  CHECK(r.exit_code == 2);
}

TEST_CASE("no agent listening for a pid: the error names pid, socket and the likely cause") {
  int pid = getpid();  // this test runs without the agent
  CommandResult r = Procmig({"status", std::to_string(pid), "--control", "/nonexistent/x.sock"});
  CHECK(r.exit_code == 1);
  CHECK(r.err == absl::StrCat("procmig status: connect to agent of pid ", pid,
                              " at /nonexistent/x.sock: ENOENT (No such file or directory) (is "
                              "it running under procmig run?)\n"));
  r = Procmig({"migrate", std::to_string(pid), "--to", "127.0.0.1:9"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.err, absl::StrCat("procmig migrate: connect to agent of pid ", pid, " at ")));
  CHECK(Contains(r.err, "is it running under procmig run?"));
  testing::TempDir dir;
  r = Procmig({"checkpoint", std::to_string(pid), "--to", dir.path() + "/img"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.err, absl::StrCat("procmig checkpoint: connect to agent of pid ", pid)));
  CHECK(dir.List().empty());  // the in-process receiver stored nothing
  r = Procmig({"cancel", "2147483646"});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "procmig cancel: connect to agent of pid 2147483646: no such process\n");
}

TEST_CASE("run execs the program in place with the agent prepended to LD_PRELOAD") {
  setenv("PROCMIG_PRELOAD", "/dev/null", 1);  // ld.so ignores it with a warning; env is what counts
  setenv("LD_PRELOAD", "", 1);
  CommandResult r = Procmig({"run", "--control", "/tmp/c.sock", "--", "/bin/sh", "-c",
                             "echo \"$LD_PRELOAD|$PROCMIG_CONTROL\""});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "/dev/null|/tmp/c.sock\n");
  setenv("LD_PRELOAD", "/dev/zero", 1);
  r = Procmig({"run", "/bin/sh", "-c", "echo \"$LD_PRELOAD\""});
  CHECK(r.out == "/dev/null:/dev/zero\n");
  unsetenv("LD_PRELOAD");
  r = Procmig({"run", "--", "/nonexistent/prog"});
  CHECK(r.exit_code == 127);
  CHECK(Contains(r.err, "procmig run: exec /nonexistent/prog: "));
  setenv("PROCMIG_PRELOAD", "/nonexistent/lib.so", 1);
  r = Procmig({"run", "--", "/bin/true"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.err, "preload library /nonexistent/lib.so"));
  unsetenv("PROCMIG_PRELOAD");
}

// A child `procmig receive` with its stdout on a pipe, so the test can read the bound address.
struct Child {
  pid_t pid = -1;
  int out = -1;
  std::string text;
  std::string ReadLine() {
    for (;;) {
      size_t nl = text.find('\n');
      if (nl != std::string::npos) {
        std::string line = text.substr(0, nl);
        text.erase(0, nl + 1);
        return line;
      }
      char buf[512];
      ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) return "";
      text.append(buf, n);
    }
  }
  int Wait(std::string* rest) {
    char buf[4096];
    ssize_t n;
    while ((n = read(out, buf, sizeof buf)) > 0) text.append(buf, n);
    *rest = text;
    close(out);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

Child Spawn(std::vector<std::string> args) {
  args.insert(args.begin(), PROCMIG_BIN);
  int p[2];
  REQUIRE(pipe(p) == 0);
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(p[1]);
  c.out = p[0];
  return c;
}

// Sends `stream` over one TCP channel and returns the reverse stream's last ack kind (0: none).
int SendOver(const std::string& address, const Bytes& stream) {
  auto ep = Endpoint::Parse(address);
  REQUIRE(ep.ok());
  TransportConfig config;
  config.kind = TransportKind::kPosix;
  auto g = ChannelGroup::Connect(*ep, 1, 99, config);
  REQUIRE(g.ok());
  REQUIRE((*g)->channel(0).Write(stream.data(), stream.size()).ok());
  wire::StreamReader r(wire::ReaderOptions{wire::Direction::kReverse});
  int last = 0;
  uint8_t buf[1024];
  for (;;) {
    auto n = (*g)->channel(0).ReadSome(buf, sizeof buf);
    if (!n.ok() || *n == 0) break;
    REQUIRE(r.Feed({buf, *n}).ok());
    for (;;) {
      auto rec = r.Next();
      REQUIRE(rec.ok());
      if (*rec == nullptr) break;
      if ((*rec)->type == wire::RecordType::kAck) {
        last = static_cast<int>(std::get<wire::Ack>((*rec)->body).kind);
      }
      if ((*rec)->type == wire::RecordType::kError) last = -1;
    }
  }
  (void)(*g)->Close();
  return last;
}

// Each block's file stays open while the session streams: 300 blocks under a soft limit of 64
// open files (the receiver raises it to the hard limit).
TEST_CASE("receive --store of a process with more blocks than the soft open-file limit") {
  testing::TempDir dir;
  const std::string img = dir.path() + "/image";
  testing::StreamBuilder b(testing::DstPreamble());
  for (uint32_t id = 1; id <= 300; ++id) {
    b.BlockAdd(id, 0x10000000 + uint64_t{id} * 0x10000, 1, "anon");
    b.Run(id, 0, {b.Raw(testing::PatternPage(id))});
  }
  b.Iteration(0, true);
  Bytes stream = b.End();
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  if (saved.rlim_max < 1024) {
    MESSAGE("skipped: the hard open-file limit here is ", saved.rlim_max);
    return;
  }
  rlimit low = saved;
  low.rlim_cur = 64;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  Child c = Spawn({"receive", "--listen", "127.0.0.1:0", "--store", img, "--once", "--no-sync"});
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  std::string first = c.ReadLine();
  REQUIRE(first.starts_with("listening on 127.0.0.1:"));
  CHECK(SendOver(first.substr(strlen("listening on ")), stream) == 3);  // kEndOfStream
  std::string rest;
  CHECK(c.Wait(&rest) == 0);
  auto m = ImageStore::ReadManifest(img);
  REQUIRE(m.ok());
  REQUIRE(m->blocks.size() == 300);
  auto last = ImageStore::ReadBlock(img, *m, m->blocks[299]);
  REQUIRE(last.ok());
  CHECK(*last == testing::PatternPage(300));
}

TEST_CASE("receive --once --store over TCP loopback, then inspect DIR; a corrupt file is caught") {
  testing::TempDir dir;
  const std::string img = dir.path() + "/image";
  Bytes p1 = testing::PatternPage(1), p2 = testing::PatternPage(2);
  testing::StreamBuilder b(testing::DstPreamble());
  b.BlockAdd(1, 0x7f0000000000, 3, "heap@0x7f0000000000");
  b.Run(1, 0, {b.Raw(p1), b.Zero(), b.Zlib(p2)});
  b.Iteration(0, true);
  Bytes stream = b.End();

  Child c = Spawn({"receive", "--listen", "127.0.0.1:0", "--store", img, "--once"});
  std::string first = c.ReadLine();
  REQUIRE(first.starts_with("listening on 127.0.0.1:"));
  CHECK(SendOver(first.substr(strlen("listening on ")), stream) == 3);  // kEndOfStream
  std::string rest;
  CHECK(c.Wait(&rest) == 0);
  CHECK(Contains(rest, "session 101112131415161718191a1b1c1d1e1f stored in " + img));
  CHECK(Contains(rest, "pages 3: zero 1, raw 1, xbzrle 0, zlib 1"));
  CHECK(Contains(rest, "heap@0x7f0000000000"));

  auto m = ImageStore::ReadManifest(img);
  REQUIRE(m.ok());
  auto block = ImageStore::ReadBlock(img, *m, m->blocks[0]);
  REQUIRE(block.ok());
  Bytes want = p1;
  want.resize(2 * kPs, 0);
  want.insert(want.end(), p2.begin(), p2.end());
  CHECK(*block == want);

  CommandResult ins = Procmig({"inspect", img});
  CHECK(ins.exit_code == 0);
  CHECK(Contains(ins.out, "checkpoint image " + img));
  CHECK(Contains(ins.out, "session      101112131415161718191a1b1c1d1e1f"));
  INFO(ins.out);
  CHECK(Contains(ins.out,
                 "0x00007f0000000000  12288        rw-  anon         2          none      "
                 "heap@0x7f0000000000"));
  CHECK(Contains(ins.out, "match the manifest"));

  // A second --once into the same directory is refused before listening.
  CommandResult again = Procmig({"receive", "--listen", "127.0.0.1:0", "--store", img, "--once"});
  CHECK(again.exit_code == 1);
  CHECK(Contains(again.err, "already holds an image"));

  {
    std::fstream f(img + "/block-1.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.put('\x42');
  }
  ins = Procmig({"inspect", img});
  CHECK(ins.exit_code == 1);
  CHECK(Contains(ins.err, "block-1.bin: crc32c"));
}

TEST_CASE("receive without --once stores each session in DIR/<session>; a bad one leaves nothing") {
  testing::TempDir dir;
  Bytes p1 = testing::PatternPage(7);
  testing::StreamBuilder good(testing::DstPreamble());
  good.BlockAdd(1, 0x10000, 1, "a");
  good.Run(1, 0, {good.Raw(p1)});
  Bytes ok_stream = good.End();
  testing::StreamBuilder bad(testing::DstPreamble());
  bad.BlockAdd(1, 0x10000, 1, "a");
  auto z = bad.Zlib(p1);
  z.page_crc ^= 1;
  bad.Run(1, 0, {z});
  Bytes bad_stream = bad.End();

  Child c = Spawn({"receive", "--listen", "127.0.0.1:0", "--store", dir.path(), "--no-sync"});
  std::string first = c.ReadLine();
  REQUIRE(first.starts_with("listening on "));
  std::string addr = first.substr(strlen("listening on "));
  CHECK(SendOver(addr, bad_stream) == -1);
  // The session's temporary image directory goes once the receiver has told the sender why.
  for (int i = 0; i < 500 && !dir.List().empty(); ++i) usleep(10000);
  CHECK(dir.List().empty());
  CHECK(SendOver(addr, ok_stream) == 3);
  CHECK(dir.List() == std::vector<std::string>{"101112131415161718191a1b1c1d1e1f"});
  std::string line;
  while (!(line = c.ReadLine()).empty() && !Contains(line, "stored in")) {
  }
  const std::string want = "session 101112131415161718191a1b1c1d1e1f stored in " + dir.path() +
                           "/101112131415161718191a1b1c1d1e1f (checks ";
  CHECK(line.substr(0, want.size()) == want);
  CHECK(line.find(" ms, commit ") != std::string::npos);
  CHECK(line.substr(line.size() - 4) == " ms)");
  kill(c.pid, SIGTERM);
  std::string rest;
  c.Wait(&rest);
}

}  // namespace
}  // namespace procmig
