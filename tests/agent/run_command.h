// Runs a command as a child process and captures its exit status, stdout and stderr: how the
// agent tests drive the real `procmig` binary.
#ifndef PROCMIG_TESTS_AGENT_RUN_COMMAND_H_
#define PROCMIG_TESTS_AGENT_RUN_COMMAND_H_

#include <string>
#include <vector>

namespace procmig::testing {

struct CommandResult {
  int exit_code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

CommandResult RunCommand(const std::vector<std::string>& argv);

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_AGENT_RUN_COMMAND_H_
