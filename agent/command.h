// The `procmig` command's subcommand table and the small argument parser they share.
//
// Each subcommand is a function taking its arguments (after the subcommand name) and returning
// the process exit status. Every subcommand answers `--help`. Errors go to stderr as
// "procmig <subcommand>: <message>" and give exit status 1; usage errors give 2.
#ifndef PROCMIG_AGENT_COMMAND_H_
#define PROCMIG_AGENT_COMMAND_H_

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace procmig::agent {

struct Command {
  std::string_view name;
  std::string_view summary;  // one line, for `procmig --help`
  std::string_view usage;    // full text, for `procmig NAME --help`
  int (*run)(std::span<const std::string_view> args);
};

// The table of all subcommands, in the order `procmig --help` lists them.
std::span<const Command> Commands();

// Parses GNU-style options against a fixed set of known names. Flags are "--name"; options with
// a value are "--name VALUE" or "--name=VALUE". Anything not starting with "--" is positional;
// "--" ends options. Unknown options and missing values are usage errors.
class ArgParser {
 public:
  ArgParser(std::string_view command, std::vector<std::string_view> flags,
            std::vector<std::string_view> valued);

  // Returns false (after printing the reason to stderr) on a usage error.
  bool Parse(std::span<const std::string_view> args);

  bool Has(std::string_view flag) const;
  std::optional<std::string_view> Value(std::string_view option) const;
  const std::vector<std::string_view>& positional() const { return positional_; }

 private:
  std::string_view command_;
  std::vector<std::string_view> flags_;
  std::vector<std::string_view> valued_;
  std::vector<std::string_view> seen_flags_;
  std::vector<std::pair<std::string_view, std::string_view>> values_;
  std::vector<std::string_view> positional_;
};

// Prints `text` to stdout and returns 0: the common end of `--help`.
int PrintHelp(std::string_view text);
// Prints "procmig <command>: <message>" to stderr and returns `status`.
int Fail(std::string_view command, std::string_view message, int status = 1);

int RunCheckCommand(std::span<const std::string_view> args);
int RunInspectCommand(std::span<const std::string_view> args);
int RunRunCommand(std::span<const std::string_view> args);
int RunMigrateCommand(std::span<const std::string_view> args);
int RunCheckpointCommand(std::span<const std::string_view> args);
int RunStatusCommand(std::span<const std::string_view> args);
int RunCancelCommand(std::span<const std::string_view> args);
int RunReceiveCommand(std::span<const std::string_view> args);
int RunRestoreCommand(std::span<const std::string_view> args);

}  // namespace procmig::agent

#endif  // PROCMIG_AGENT_COMMAND_H_
