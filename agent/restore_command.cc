// `procmig restore DIR`: rebuilds a stored checkpoint as a running process.
#include <cstdio>
#include <string>

#include "command.h"
#include "procmig/restore.h"

namespace procmig::agent {

int RunRestoreCommand(std::span<const std::string_view> args) {
  ArgParser p("restore", {"detach", "no-pid-ns"}, {});
  if (!p.Parse(args)) return 2;
  if (p.positional().size() != 1) return Fail("restore", "needs exactly one image DIR", 2);
  RestoreOptions o;
  o.pid_namespace = !p.Has("no-pid-ns");
  const std::string dir(p.positional()[0]);
  absl::StatusOr<RestoreResult> r = RestoreImage(dir, o);
  if (!r.ok()) return Fail("restore", std::string(r.status().message()));
  std::fprintf(stderr, "procmig restore: %s\n", RenderRestoreResult(*r).c_str());
  if (p.Has("detach")) {
    std::printf("%d\n", r->host_pid);
    return 0;
  }
  absl::StatusOr<int> code = WaitRestored(*r);
  if (!code.ok()) return Fail("restore", std::string(code.status().message()));
  return *code;
}

}  // namespace procmig::agent
