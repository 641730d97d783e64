// procmig's public API for talking to the in-process agent of a running program over its control
// socket (the protocol is control.h's).
//
// Where the socket of pid P is looked for, in this order (the first that exists wins):
//   1. the path given explicitly (`--control PATH`);
//   2. PROCMIG_CONTROL as set in P's own environment (/proc/P/environ: `procmig run --control`
//      sets it for the program, and the agent reads the same variable);
//   3. $XDG_RUNTIME_DIR/procmig/P.sock, with XDG_RUNTIME_DIR taken from P's environment;
//   4. /run/procmig/P.sock when P runs as root;
//   5. /tmp/procmig-UID/P.sock, UID being P's owner.
// In 3-5, a process in a PID namespace other than the initial one (a restored process keeps its
// old pid in a new namespace) is looked for first as "N.pidns-I.sock": N the last pid of
// NSpid in /proc/P/status (its pid as it sees itself), I the inode of /proc/P/ns/pid.
// The agent (preload/agent.cc) creates its socket by the same rules: PROCMIG_CONTROL, else the
// first usable of $XDG_RUNTIME_DIR/procmig, /run/procmig (root), /tmp/procmig-<uid> (mode 0600).
//
// An AgentConnection is one request and its replies; one thread at a time.
#ifndef PROCMIG_AGENT_CLIENT_H_
#define PROCMIG_AGENT_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "procmig/control.h"

namespace procmig {

// Candidate socket paths for `pid`, in lookup order (see above); `explicit_path` first if set.
std::vector<std::string> AgentSocketCandidates(int pid, const std::string& explicit_path);

class AgentConnection {
 public:
  // Connects to the first candidate that exists. Errors name the pid, the path and the cause,
  // e.g. "connect to agent of pid 1234 at /tmp/procmig-0/1234.sock: ENOENT (is it running under
  // procmig run?)"; NotFound when there is no such process.
  static absl::StatusOr<std::unique_ptr<AgentConnection>> Connect(int pid,
                                                                  const std::string& explicit_path);
  ~AgentConnection();
  AgentConnection(const AgentConnection&) = delete;
  AgentConnection& operator=(const AgentConnection&) = delete;

  absl::Status Send(const ControlMessage& m);
  // The next reply line, decoded. Unavailable when the agent closed the connection.
  absl::StatusOr<ControlMessage> Receive();

  const std::string& path() const { return path_; }

 private:
  AgentConnection(int fd, std::string path, int pid);
  const int fd_;
  const std::string path_;
  const int pid_;
  std::string buffer_;
};

}  // namespace procmig

#endif  // PROCMIG_AGENT_CLIENT_H_
