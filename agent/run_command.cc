// `procmig run [options] -- PROG ARGS...`: exec PROG with the agent preloaded.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "command.h"

namespace procmig::agent {
namespace {

constexpr char kPreloadName[] = "libprocmig_preload.so";

std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

// PROCMIG_PRELOAD, else next to procmig, else ../preload/ (the build tree), else ../lib/.
std::string FindPreload() {
  if (const char* e = std::getenv("PROCMIG_PRELOAD"); e != nullptr && *e != '\0') return e;
  std::string dir = SelfDir();
  for (const std::string& c : {dir + "/" + kPreloadName, dir + "/../preload/" + kPreloadName,
                               dir + "/../lib/" + kPreloadName}) {
    if (access(c.c_str(), R_OK) == 0) return c;
  }
  return "";
}

}  // namespace

int RunRunCommand(std::span<const std::string_view> args) {
  // Options stop at the first positional (PROG) as well as at "--", so PROG's own options pass.
  size_t split = 0;
  bool dashes = false;
  while (split < args.size()) {
    if (args[split] == "--") {
      dashes = true;
      break;
    }
    if (!args[split].starts_with("--")) break;
    // Valued options take the next argument unless written --name=value.
    std::string_view a = args[split];
    if ((a == "--control" || a == "--log") && split + 1 < args.size()) ++split;
    ++split;
  }
  ArgParser p("run", {}, {"control", "log"});
  if (!p.Parse(args.subspan(0, split))) return 2;
  std::span<const std::string_view> prog = args.subspan(split + (dashes ? 1 : 0));
  if (prog.empty()) return Fail("run", "needs a program: procmig run [options] -- PROG ARGS...", 2);

  std::string preload = FindPreload();
  if (preload.empty()) {
    return Fail("run", std::string("cannot find ") + kPreloadName +
                           " next to procmig, in ../preload/ or ../lib/ (set PROCMIG_PRELOAD)");
  }
  if (access(preload.c_str(), R_OK) != 0) {
    return Fail("run", "preload library " + preload + ": " + std::strerror(errno));
  }
  std::string ld = preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
    ld += ":";
    ld += old;
  }
  setenv("LD_PRELOAD", ld.c_str(), 1);
  if (auto c = p.Value("control")) setenv("PROCMIG_CONTROL", std::string(*c).c_str(), 1);
  if (auto l = p.Value("log")) setenv("PROCMIG_LOG", std::string(*l).c_str(), 1);

  std::vector<std::string> owned(prog.begin(), prog.end());
  std::vector<char*> argv;
  for (std::string& s : owned) argv.push_back(s.data());
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());  // keeps our pid and stdio
  int err = errno;
  return Fail("run", "exec " + owned[0] + ": " + std::strerror(err), err == ENOENT ? 127 : 126);
}

}  // namespace procmig::agent
