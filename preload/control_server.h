// The agent thread's control server: accepts `procmig` connections on the control socket
// (SO_PEERCRED: same uid or root), answers STATUS and CANCEL, and runs a MIGRATE on the agent
// thread itself, sending STATS lines (and serving STATUS/CANCEL from other connections) from the
// progress callback, then DONE or ERROR. After a successful migration (or a checkpoint without
// leave_running) it writes DONE and ends the process with exit_group(0) while the program's
// threads are still parked. Runs only on the agent thread.
#ifndef PROCMIG_PRELOAD_CONTROL_SERVER_H_
#define PROCMIG_PRELOAD_CONTROL_SERVER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "preload/agent.h"

namespace procmig::preload {

struct AgentContext {
  int listen_fd = -1;
  int log_fd = -1;
  pid_t agent_tid = 0;
  ParkFreezer* freezer = nullptr;
  // The excluded part of the agent thread's stack (its top is migrated: see agent.cc).
  uintptr_t stack = 0;
  size_t stack_size = 0;
  char socket_path[256] = "";
};

void ServeControl(AgentContext* ctx);

}  // namespace procmig::preload

#endif  // PROCMIG_PRELOAD_CONTROL_SERVER_H_
