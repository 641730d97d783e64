// `procmig status PID` and `procmig cancel PID`: ask the agent inside PID.
#include <charconv>
#include <cstdio>
#include <string>

#include "command.h"
#include "procmig/agent_client.h"
#include "procmig/control.h"

namespace procmig::agent {
namespace {

int Ask(const char* cmd, std::span<const std::string_view> args, ControlVerb verb) {
  ArgParser p(cmd, {"json"}, {"control"});
  if (!p.Parse(args)) return 2;
  if (p.positional().size() != 1) return Fail(cmd, "needs exactly one PID (see --help)", 2);
  int pid = 0;
  std::string_view s = p.positional()[0];
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), pid);
  if (ec != std::errc() || end != s.data() + s.size() || pid <= 0) {
    return Fail(cmd, "PID must be a positive number", 2);
  }
  auto conn = AgentConnection::Connect(pid, std::string(p.Value("control").value_or("")));
  if (!conn.ok()) return Fail(cmd, std::string(conn.status().message()));
  ControlMessage req;
  req.verb = verb;
  if (absl::Status st = (*conn)->Send(req); !st.ok()) return Fail(cmd, std::string(st.message()));
  auto m = (*conn)->Receive();
  if (!m.ok()) return Fail(cmd, std::string(m.status().message()));
  if (m->verb == ControlVerb::kError) return Fail(cmd, m->ToStatus().ToString());
  if (verb == ControlVerb::kCancel) {
    if (m->verb != ControlVerb::kOk) return Fail(cmd, "unexpected reply from the agent");
    std::printf("cancelled\n");
    return 0;
  }
  if (m->verb != ControlVerb::kStats && m->verb != ControlVerb::kDone) {
    return Fail(cmd, "unexpected reply from the agent");
  }
  if (p.Has("json")) {
    std::printf("%s\n", StatsToJson(m->stats).c_str());
    return 0;
  }
  const MigrationStats& st = m->stats;
  std::printf(
      "phase              %s\niteration          %llu\ntotal bytes        %llu\n"
      "transferred bytes  %llu\nremaining bytes    %llu\nnormal pages       %llu\n"
      "zero pages         %llu\nxbzrle pages       %llu\ndirty pages rate   %llu/s\n"
      "throughput         %llu B/s\nexpected downtime  %llu ms\nthrottle           %u%%\n",
      std::string(PhaseName(st.phase)).c_str(), static_cast<unsigned long long>(st.iteration),
      static_cast<unsigned long long>(st.total_bytes),
      static_cast<unsigned long long>(st.transferred_bytes),
      static_cast<unsigned long long>(st.remaining_bytes),
      static_cast<unsigned long long>(st.normal_pages),
      static_cast<unsigned long long>(st.zero_pages),
      static_cast<unsigned long long>(st.xbzrle_pages),
      static_cast<unsigned long long>(st.dirty_pages_rate),
      static_cast<unsigned long long>(st.throughput_bps),
      static_cast<unsigned long long>(st.expected_downtime_ms), st.throttle_percent);
  return 0;
}

}  // namespace

int RunStatusCommand(std::span<const std::string_view> args) {
  return Ask("status", args, ControlVerb::kStatus);
}
int RunCancelCommand(std::span<const std::string_view> args) {
  return Ask("cancel", args, ControlVerb::kCancel);
}

}  // namespace procmig::agent
