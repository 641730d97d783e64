// `procmig inspect FILE|DIR`: a readable summary of a recorded stream or a stored image.
#include <cstdio>
#include <string>

#include "command.h"
#include "procmig/destination.h"
#include "procmig/inspect.h"

namespace procmig::agent {

int RunInspectCommand(std::span<const std::string_view> args) {
  ArgParser p("inspect", {}, {});
  if (!p.Parse(args)) return 2;
  if (p.positional().size() != 1) {
    return Fail("inspect", "needs exactly one FILE or DIR (see --help)", 2);
  }
  std::string path(p.positional()[0]);
  if (IsImageDirectory(path)) {
    auto report = InspectImage(path);
    if (!report.ok()) return Fail("inspect", std::string(report.status().message()));
    std::fwrite(report->text.data(), 1, report->text.size(), stdout);
    if (!report->verify_status.ok()) {
      return Fail("inspect", std::string(report->verify_status.message()));
    }
    return 0;
  }
  auto report = InspectStream(path);
  if (!report.ok()) return Fail("inspect", std::string(report.status().message()));
  std::fwrite(report->text.data(), 1, report->text.size(), stdout);
  if (!report->stream_status.ok())
    return Fail("inspect", std::string(report->stream_status.message()));
  return 0;
}

}  // namespace procmig::agent
