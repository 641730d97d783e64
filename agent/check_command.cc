// `procmig check`: what this kernel offers, by behaviour.
#include <cstdio>

#include "command.h"
#include "procmig/check.h"

namespace procmig::agent {

int RunCheckCommand(std::span<const std::string_view> args) {
  ArgParser p("check", {"json"}, {});
  if (!p.Parse(args)) return 2;
  if (!p.positional().empty()) return Fail("check", "takes no arguments (see --help)", 2);
  auto report = RunCheck(p.Has("json") ? CheckFormat::kJson : CheckFormat::kTable);
  if (!report.ok()) return Fail("check", report.status().ToString());
  std::fwrite(report->data(), 1, report->size(), stdout);
  return 0;
}

}  // namespace procmig::agent
