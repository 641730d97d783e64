// `procmig receive`: the destination of a migration or checkpoint: restores the process live,
// or stores a verified image (--store).
#include <charconv>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "command.h"
#include "procmig/destination.h"

namespace procmig::agent {

int RunReceiveCommand(std::span<const std::string_view> args) {
  ArgParser p("receive", {"once", "no-sync", "no-populate", "detach", "no-pid-ns"},
              {"listen", "store", "channels", "transport", "stdin", "stdout", "stderr"});
  if (!p.Parse(args)) return 2;
  if (!p.positional().empty())
    return Fail("receive", "takes no positional arguments (see --help)", 2);
  ReceiveOptions o;
  o.listen = std::string(p.Value("listen").value_or(""));
  o.store_dir = std::string(p.Value("store").value_or(""));
  o.once = p.Has("once");
  o.restore.pid_namespace = !p.Has("no-pid-ns");
  if (o.store_dir.empty() && p.Has("detach") && !o.once) {
    return Fail("receive", "--detach goes with --once (a live restore of one session)", 2);
  }
  o.sync = !p.Has("no-sync");
  o.populate = !p.Has("no-populate");
  o.transport = std::string(p.Value("transport").value_or("auto"));
  if (auto c = p.Value("channels")) {
    auto [end, ec] = std::from_chars(c->data(), c->data() + c->size(), o.channels);
    if (ec != std::errc() || end != c->data() + c->size() || o.channels < 1) {
      return Fail("receive", "--channels needs a number from 1 to 64", 2);
    }
  }
  static constexpr std::string_view kStdio[3] = {"stdin", "stdout", "stderr"};
  if (!o.store_dir.empty()) {
    for (std::string_view name : kStdio) {
      if (p.Value(name).has_value()) {
        return Fail("receive", "--" + std::string(name) + " goes with a live restore, not --store",
                    2);
      }
    }
  }
  if (absl::Status s = o.Validate(); !s.ok()) return Fail("receive", std::string(s.message()), 2);
  // Redirected stdio, opened before listening: a bad path fails before any migration starts.
  for (int i = 0; i < 3; ++i) {
    std::optional<std::string_view> path = p.Value(kStdio[i]);
    if (!path.has_value()) continue;
    absl::StatusOr<int> fd = OpenStdioRedirect(i, std::string(*path));
    if (!fd.ok()) {
      return Fail("receive",
                  "--" + std::string(kStdio[i]) + " " + std::string(fd.status().message()));
    }
    o.restore.stdio_fds[i] = *fd;  // held until exit: every session's process gets a copy
  }
  auto report = RunReceiver(o, [](const ReceiveEvent& e) {
    switch (e.kind) {
      case ReceiveEvent::Kind::kListening:
        std::printf("listening on %s\n", e.address.c_str());
        break;
      case ReceiveEvent::Kind::kSessionStored:
        std::fputs(RenderReceiveReport(e.report).c_str(), stdout);
        break;
      case ReceiveEvent::Kind::kSessionFailed:
        std::fprintf(stderr, "procmig receive: session failed: %s\n",
                     std::string(e.error.message()).c_str());
        break;
    }
    std::fflush(stdout);
  });
  if (!report.ok()) return Fail("receive", std::string(report.status().message()));
  std::fputs(RenderReceiveReport(*report).c_str(), stdout);
  std::fflush(stdout);
  if (report->restored.has_value() && !p.Has("detach")) {
    // Like `criu restore` without -d: wait for the restored program, exit with its status.
    absl::StatusOr<int> code = WaitRestored(*report->restored);
    if (!code.ok()) return Fail("receive", std::string(code.status().message()));
    return *code;
  }
  return 0;
}

}  // namespace procmig::agent
