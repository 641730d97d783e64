// `procmig inspect FILE`: a readable summary of a recorded stream.
#include <cstdio>
#include <string>

#include "command.h"
#include "procmig/inspect.h"

namespace procmig::agent {

int RunInspectCommand(std::span<const std::string_view> args) {
  ArgParser p("inspect", {}, {});
  if (!p.Parse(args)) return 2;
  if (p.positional().size() != 1) return Fail("inspect", "needs exactly one FILE (see --help)", 2);
  auto report = InspectStream(std::string(p.positional()[0]));
  if (!report.ok()) return Fail("inspect", std::string(report.status().message()));
  std::fwrite(report->text.data(), 1, report->text.size(), stdout);
  if (!report->stream_status.ok())
    return Fail("inspect", std::string(report->stream_status.message()));
  return 0;
}

}  // namespace procmig::agent
