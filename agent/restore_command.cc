// `procmig restore DIR`: rebuilds a stored checkpoint as a running process.
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "command.h"
#include "procmig/restore.h"

namespace procmig::agent {

int RunRestoreCommand(std::span<const std::string_view> args) {
  ArgParser p("restore", {"detach", "no-pid-ns"}, {"stdin", "stdout", "stderr"});
  if (!p.Parse(args)) return 2;
  if (p.positional().size() != 1) return Fail("restore", "needs exactly one image DIR", 2);
  RestoreOptions o;
  o.pid_namespace = !p.Has("no-pid-ns");
  const std::string dir(p.positional()[0]);
  // Redirected stdio, opened before anything is read or created: a bad path restores nothing.
  static constexpr std::string_view kStdio[3] = {"stdin", "stdout", "stderr"};
  for (int i = 0; i < 3; ++i) {
    std::optional<std::string_view> path = p.Value(kStdio[i]);
    if (!path.has_value()) continue;
    absl::StatusOr<int> fd = OpenStdioRedirect(i, std::string(*path));
    if (!fd.ok()) {
      for (int k = 0; k < i; ++k) {
        if (o.stdio_fds[k] >= 0) close(o.stdio_fds[k]);
      }
      return Fail("restore",
                  "--" + std::string(kStdio[i]) + " " + std::string(fd.status().message()));
    }
    o.stdio_fds[i] = *fd;
  }
  absl::StatusOr<RestoreResult> r = RestoreImage(dir, o);
  for (int fd : o.stdio_fds) {
    if (fd >= 0) close(fd);  // the restored process has its own copies
  }
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
