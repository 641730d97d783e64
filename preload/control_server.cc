#include "preload/control_server.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "preload/agent.h"
#include "preload/agent_heap.h"
#include "preload/memory_interpose.h"
#include "procmig/control.h"
#include "procmig/source.h"

namespace procmig::preload {
namespace {

MigrationSource* g_running = nullptr;  // agent thread only

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void Reply(int fd, const ControlMessage& m) {
  std::string line = EncodeControl(m);
  (void)WriteAll(fd, line.data(), line.size());
}

// Reads one line (up to kMaxControlLine) within timeout_ms; empty on failure.
std::string ReadLine(int fd, int timeout_ms) {
  std::string line;
  char c;
  while (line.size() < kMaxControlLine) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return {};
    ssize_t n = recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};
    if (c == '\n') return line;
    line.push_back(c);
  }
  return {};
}

bool PeerAllowed(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == getuid();
}

// "DONE ..." built without allocating: after a successful migration the program's threads are
// parked (they may hold the malloc lock) and the process ends right after this line.
void WriteDoneFixed(int fd, const MigrationStats& s) {
  char buf[1024];
  size_t n = EncodeDoneNoAlloc(s, buf, sizeof buf);
  if (n != 0) (void)WriteAll(fd, buf, n);
}

void HandleQuick(int fd, const ControlMessage& req) {
  if (req.verb == ControlVerb::kStatus) {
    ControlMessage m;
    m.verb = ControlVerb::kStats;
    if (g_running != nullptr) m.stats = g_running->stats();
    Reply(fd, m);
  } else if (req.verb == ControlVerb::kCancel) {
    if (g_running == nullptr) {
      Reply(fd, ErrorReply(absl::FailedPreconditionError("cancel: no migration is running")));
      return;
    }
    g_running->Cancel();
    ControlMessage m;
    m.verb = ControlVerb::kOk;
    Reply(fd, m);
  } else {
    Reply(fd, ErrorReply(absl::UnavailableError("migrate: a migration is already running")));
  }
}

// Accepts and answers at most a few waiting connections without blocking (during a migration).
void ServePending(AgentContext* ctx) {
  for (int i = 0; i < 4; ++i) {
    pollfd p{ctx->listen_fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return;
    int fd = accept4(ctx->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    if (PeerAllowed(fd)) {
      std::string line = ReadLine(fd, 1000);
      absl::StatusOr<ControlMessage> req = DecodeControl(line);
      if (req.ok()) {
        HandleQuick(fd, *req);
      } else {
        Reply(fd, ErrorReply(req.status()));
      }
    }
    close(fd);
  }
}

// This library's writable segments (.data, .bss and what the loader writes there): they travel
// with the program, but the agent writes them itself while the program is parked.
void AddOwnWritableSegments(std::vector<std::pair<uintptr_t, uintptr_t>>* out) {
  struct Find {
    uintptr_t base;
    std::vector<std::pair<uintptr_t, uintptr_t>>* out;
  };
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&AddOwnWritableSegments), &info) == 0) return;
  Find find{reinterpret_cast<uintptr_t>(info.dli_fbase), out};
  dl_iterate_phdr(
      [](dl_phdr_info* i, size_t, void* arg) {
        auto* f = static_cast<Find*>(arg);
        if (i->dlpi_addr != f->base) return 0;
        for (int k = 0; k < i->dlpi_phnum; ++k) {
          const ElfW(Phdr)& ph = i->dlpi_phdr[k];
          if (ph.p_type != PT_LOAD || (ph.p_flags & PF_W) == 0) continue;
          const uintptr_t start = i->dlpi_addr + ph.p_vaddr;
          f->out->push_back({start, start + ph.p_memsz});
        }
        return 1;
      },
      &find);
}

void RunMigration(AgentContext* ctx, int fd, const MigrationOptions& options) {
  SourceSetup setup;
  setup.options = options;
  GatedFreezer gated(ctx->freezer, &Gate());
  setup.freezer = &gated;
  setup.excluded.push_back({ctx->freezer->arena_begin(), ctx->freezer->arena_end()});
  if (ctx->stack != 0) setup.excluded.push_back({ctx->stack, ctx->stack + ctx->stack_size});
  // The agent heap's large runs (the sender's staging area, caches, buffers) never travel; its
  // small objects do, like the library's .bss (agent_heap.h).
  (void)TheAgentHeap().Start();
  if (auto [b, e] = TheAgentHeap().large_zone(); e > b) setup.excluded.push_back({b, e});
  if (auto [b, e] = TheAgentHeap().small_zone(); e > b) setup.unchecked.push_back({b, e});
  AddOwnWritableSegments(&setup.unchecked);
  // The top of the agent thread's stack: glibc's descriptor and the thread's TLS (errno...).
  if (const AgentThreadInfo& t = CurrentAgentThread(); t.migrated_from != 0) {
    setup.unchecked.push_back({t.migrated_from, t.stack + t.stack_bytes});
  }
  setup.own_fds = {ctx->listen_fd, fd};
  setup.layout_gate = &Gate();
  if (ctx->log_fd >= 0) setup.own_fds.push_back(ctx->log_fd);
  setup.progress = [ctx, fd](const MigrationStats& s) {
    ControlMessage m;
    m.verb = ControlVerb::kStats;
    m.stats = s;
    Reply(fd, m);
    ctx->freezer->Tick();
    ServePending(ctx);
  };
  setup.log = [](const std::string& s) { Log("%s", s.c_str()); };
  absl::StatusOr<std::unique_ptr<MigrationSource>> source = MigrationSource::Create(setup);
  if (!source.ok()) {
    Log("migrate: %s", source.status().ToString().c_str());
    Reply(fd, ErrorReply(source.status()));
    return;
  }
  g_running = source->get();
  Log("migrate to %s: started", options.target.c_str());
  absl::Status s = (*source)->Run();
  MigrationStats stats = (*source)->stats();
  g_running = nullptr;
  const bool leave = options.mode == MigrationMode::kCheckpoint && options.leave_running;
  if (s.ok() && !leave) {
    // The receiver acked: this process's job is done. Threads stay parked; no allocation.
    stats.phase = MigrationPhase::kDone;
    WriteDoneFixed(fd, stats);
    syscall(SYS_exit_group, 0);
  }
  if (s.ok()) {
    ControlMessage m;
    m.verb = ControlVerb::kDone;
    m.stats = stats;
    m.stats.phase = MigrationPhase::kDone;
    Reply(fd, m);
    Log("checkpoint to %s: done, program left running", options.target.c_str());
    return;
  }
  Log("migrate to %s: failed: %s", options.target.c_str(), s.ToString().c_str());
  Reply(fd, ErrorReply(s));
}

}  // namespace

void ServeControl(AgentContext* ctx) {
  g_running = nullptr;  // in a restored copy: the old agent's, migrated with the .bss
  for (;;) {
    int fd = accept4(ctx->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      Log("accept on the control socket: %s; agent stops serving", strerror(errno));
      return;
    }
    if (!PeerAllowed(fd)) {
      Log("control connection refused: peer uid differs");
      close(fd);
      continue;
    }
    std::string line = ReadLine(fd, 5000);
    absl::StatusOr<ControlMessage> req = DecodeControl(line);
    if (!req.ok()) {
      Reply(fd, ErrorReply(req.status()));
    } else if (req->verb == ControlVerb::kMigrate) {
      // Its buffers come from the agent heap: the large ones are given back to the kernel when
      // freed and never migrated, the small ones stay in the heap's small zone.
      RunMigration(ctx, fd, req->options);
    } else {
      HandleQuick(fd, *req);
    }
    close(fd);
  }
}

}  // namespace procmig::preload
