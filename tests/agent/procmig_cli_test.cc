// The real `procmig` binary: help, usage errors, `check` and `inspect`.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "agent/run_command.h"
#include "dirty/tracker_probe.h"
#include "os/kernel_caps.h"
#include "os/real_os.h"
#include "unit/wire/wire_test_util.h"
#include "wire/stream_inspector.h"

namespace procmig {
namespace {

using testing::CommandResult;
using testing::RunCommand;

CommandResult Procmig(std::vector<std::string> args) {
  args.insert(args.begin(), PROCMIG_BIN);
  return RunCommand(args);
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("help for the command and for every subcommand") {
  CommandResult top = Procmig({"--help"});
  CHECK(top.exit_code == 0);
  CHECK(Contains(top.out, "  check "));
  CHECK(Contains(top.out, "  inspect "));
  for (const char* sub : {"check", "inspect"}) {
    CommandResult r = Procmig({sub, "--help"});
    CHECK(r.exit_code == 0);
    CHECK(r.out.starts_with(absl::StrCat("usage: procmig ", sub)));
    CHECK(r.err.empty());
  }
}

TEST_CASE("usage errors exit 2 and say what was wrong") {
  CommandResult none = Procmig({});
  CHECK(none.exit_code == 2);
  CHECK(Contains(none.err, "usage: procmig <command>"));
  CommandResult unknown = Procmig({"frobnicate"});
  CHECK(unknown.exit_code == 2);
  CHECK(Contains(unknown.err, "unknown command 'frobnicate'"));
  CommandResult bad_flag = Procmig({"check", "--jsn"});
  CHECK(bad_flag.exit_code == 2);
  CHECK(bad_flag.err == "procmig check: unknown option --jsn (see --help)\n");
  CommandResult no_file = Procmig({"inspect"});
  CHECK(no_file.exit_code == 2);
  CHECK(no_file.err == "procmig inspect: needs exactly one FILE or DIR (see --help)\n");
}

TEST_CASE("check --json lists every dirty-tracking backend as its behavioural probe finds it") {
  CommandResult r = Procmig({"check", "--json"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.starts_with("{\n"));
  // The same probes, run in this process, must agree with the command's report line for line.
  std::vector<TrackerProbeResult> probes = ProbeAllTrackers(TrackerConfig{});
  REQUIRE(probes.size() == 5);
  for (const TrackerProbeResult& p : probes) {
    std::string name(TrackerKindName(p.kind));
    CHECK_MESSAGE(
        Contains(r.out, absl::StrCat("\"section\": \"dirty tracking backends\", \"name\": \"", name,
                                     "\", \"available\": ", p.available ? "true" : "false")),
        name);
  }
  // Facts of the probes themselves: these two need nothing from the kernel.
  CHECK(Contains(r.out, "\"name\": \"mprotect\", \"available\": true"));
  CHECK(Contains(r.out, "\"name\": \"full\", \"available\": true"));
  // Soft-dirty is judged by behaviour: its verdict must match an independent write-and-look.
  RealOs os;
  KernelCaps caps = ProbeKernelCaps(os);
  const Feature* soft = caps.Find(feature::kSoftDirty);
  REQUIRE(soft != nullptr);
  CHECK(Contains(r.out, absl::StrCat("\"name\": \"soft-dirty\", \"available\": ",
                                     soft->available ? "true" : "false")));
  CommandResult table = Procmig({"check"});
  REQUIRE(table.exit_code == 0);
  CHECK(Contains(table.out, "dirty tracking backends\n"));
  for (const char* b : {"pagemap-scan", "soft-dirty", "uffd-wp", "mprotect", "full"}) {
    CHECK(Contains(table.out, absl::StrCat("  ", b, " ")));
  }
}

class TempFile {
 public:
  explicit TempFile(const std::vector<uint8_t>& bytes) {
    char name[] = "/tmp/procmig_cli_test_XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    path_ = name;
    REQUIRE(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_CASE("inspect summarizes a recorded stream and names the offset of a corrupt record") {
  wire::testing::SamplePages pages;
  std::vector<uint8_t> bytes = wire::testing::SampleStream(pages);
  {
    TempFile good(bytes);
    CommandResult r = Procmig({"inspect", good.path()});
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
    CHECK(Contains(r.out, "#1 heap@0x10000 0x10000-0x14000"));
    CHECK(r.out.ends_with("OK: end of stream\n"));
  }
  wire::StreamSummary clean = wire::StreamInspector::InspectBytes(bytes);
  REQUIRE(clean.iterations.size() == 2);
  uint64_t at = clean.iterations[1].offset;
  bytes[at + 14] ^= 0x01;  // a payload byte of the second iteration marker
  TempFile bad(bytes);
  CommandResult r = Procmig({"inspect", bad.path()});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.out, "CORRUPT: "));
  CHECK(r.err.starts_with(
      absl::StrCat("procmig inspect: record at offset ", at, " (iteration): crc mismatch")));

  CommandResult missing = Procmig({"inspect", "/nonexistent/stream"});
  CHECK(missing.exit_code == 1);
  CHECK(Contains(missing.err, "/nonexistent/stream"));
  CHECK(Contains(missing.err, "ENOENT"));
}

}  // namespace
}  // namespace procmig
