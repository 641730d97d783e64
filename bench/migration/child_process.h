// ChildProcess: one program the migration bench starts (the receiver, the workload under
// `procmig run`, `procmig migrate`), with its stdout readable line by line and its stderr in a
// log file. The bench thread owns every ChildProcess; the destructor kills (SIGKILL) and reaps a
// child still running, so an early return never leaves processes behind.
#ifndef PROCMIG_BENCH_MIGRATION_CHILD_PROCESS_H_
#define PROCMIG_BENCH_MIGRATION_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace procmig::bench {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] (a path) with `env` ("K=V") added to this process's environment, stdin
  // /dev/null and no other inherited descriptor (a migrated program holding a pipe to another
  // process is refused by the agent). stderr goes to `stderr_path` (appended); stdout to a pipe
  // read by ReadLine, or, when `stdout_path` is not empty, to that file (truncated). False with
  // `error` set when the program cannot be started.
  bool Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& stderr_path, std::string* error,
             const std::string& stdout_path = "");

  // The next stdout line without its '\n'; false on end of output or after `timeout_ms`.
  bool ReadLine(std::string* line, int timeout_ms);

  // Waits up to `timeout_ms` for the exit; true with the exit code (128+signal if killed).
  bool Wait(int timeout_ms, int* code);
  void Kill();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffered_;
  bool reaped_ = false;
};

// Waits up to `timeout_ms` for a line starting with `prefix` in the file at `path`.
bool WaitForLineInFile(const std::string& path, const std::string& prefix, int timeout_ms);

// Runs argv to completion; true when it exits 0 within `timeout_ms`. Output discarded.
bool RunQuiet(const std::vector<std::string>& argv, int timeout_ms);

}  // namespace procmig::bench

#endif  // PROCMIG_BENCH_MIGRATION_CHILD_PROCESS_H_
