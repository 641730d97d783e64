// procmig: the host-side command. See `procmig --help`.
#include <cstdio>
#include <string_view>
#include <vector>

#include "command.h"

namespace procmig::agent {
namespace {

constexpr std::string_view kOverview =
    "usage: procmig <command> [options]\n"
    "\n"
    "procmig moves a running Linux process's memory, live, to another host or to a checkpoint.\n"
    "\n"
    "commands:\n";

int Usage(FILE* out) {
  std::fputs(std::string(kOverview).c_str(), out);
  for (const Command& c : Commands()) {
    std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  }
  std::fputs("\nRun 'procmig <command> --help' for a command's options.\n", out);
  return out == stdout ? 0 : 2;
}

constexpr Command kCommands[] = {
    {"check", "show which kernel features and dirty-tracking backends work here, and why",
     "usage: procmig check [--json]\n"
     "\n"
     "Probes this kernel by behaviour (not by the presence of an interface) and prints every\n"
     "feature procmig may use and every dirty-tracking backend: available or not, and why.\n"
     "\n"
     "  --json   one JSON object instead of the table\n"
     "  --help   this text\n",
     RunCheckCommand},
    {"inspect", "decode a recorded migration stream and summarize it",
     "usage: procmig inspect FILE\n"
     "\n"
     "Decodes a recorded stream (a checkpoint's stream file) and prints its preamble, blocks,\n"
     "pages per encoding, iterations and whether it ended cleanly. A corrupt stream exits 1\n"
     "with the byte offset of the bad record and the check that failed.\n"
     "\n"
     "  --help   this text\n",
     RunInspectCommand},
};

}  // namespace

std::span<const Command> Commands() { return kCommands; }

}  // namespace procmig::agent

int main(int argc, char** argv) {
  using procmig::agent::Commands;
  if (argc < 2) return procmig::agent::Usage(stderr);
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") return procmig::agent::Usage(stdout);
  std::vector<std::string_view> args(argv + 2, argv + argc);
  for (const auto& c : Commands()) {
    if (c.name != name) continue;
    for (std::string_view a : args) {
      if (a == "--help" || a == "-h") return procmig::agent::PrintHelp(c.usage);
      if (a == "--") break;
    }
    return c.run(args);
  }
  std::fprintf(stderr, "procmig: unknown command '%s' (see procmig --help)\n", argv[1]);
  return 2;
}
