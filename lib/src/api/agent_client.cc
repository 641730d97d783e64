#include "procmig/agent_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

// Whether `pid` has ended (gone, or a zombie not yet reaped), waiting up to about 100 ms for it:
// an agent that closes its connection unasked most often went with its process.
bool ProcessEnded(int pid) {
  for (int i = 0; i < 20; ++i) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = fopen(path, "re");
    if (f == nullptr) return true;
    char line[512] = "";
    const bool got = fgets(line, sizeof line, f) != nullptr;
    fclose(f);
    const char* paren = got ? strrchr(line, ')') : nullptr;
    if (paren != nullptr && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X')) return true;
    usleep(5000);
  }
  return false;
}

// The value of `name` in /proc/PID/environ, or "" when unset or unreadable.
std::string TargetEnv(int pid, const std::string& name) {
  int fd = open(absl::StrCat("/proc/", pid, "/environ").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string all;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
    if (all.size() > (1u << 20)) break;
  }
  close(fd);
  std::string prefix = name + "=";
  size_t pos = 0;
  while (pos < all.size()) {
    size_t end = all.find('\0', pos);
    if (end == std::string::npos) end = all.size();
    if (all.compare(pos, prefix.size(), prefix) == 0) {
      return all.substr(pos + prefix.size(), end - pos - prefix.size());
    }
    pos = end + 1;
  }
  return "";
}

// The agent's name for its socket (preload/agent.cc AgentKey): "<pid as the process sees it>.
// pidns-<inode>" when the process is in a PID namespace other than the initial one (a restored
// process keeps its old pid in a new namespace), else "" (the plain pid).
std::string NamespacedKey(int pid) {
  constexpr unsigned long long kInitPidNsInode = 0xEFFFFFFCull;  // PROC_PID_INIT_INO
  struct stat st;
  if (stat(absl::StrCat("/proc/", pid, "/ns/pid").c_str(), &st) != 0 ||
      static_cast<unsigned long long>(st.st_ino) == kInitPidNsInode) {
    return "";
  }
  int fd = open(absl::StrCat("/proc/", pid, "/status").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return "";
  buf[n] = '\0';
  const char* line = std::strstr(buf, "\nNSpid:");
  if (line == nullptr) return "";
  // NSpid lists the pid in each namespace from ours down to the process's own: take the last.
  std::string last;
  for (const char* p = line + 7; *p != '\0' && *p != '\n';) {
    while (*p == ' ' || *p == '\t') ++p;
    const char* b = p;
    while (*p >= '0' && *p <= '9') ++p;
    if (p == b) break;
    last.assign(b, p);
  }
  if (last.empty()) return "";
  return absl::StrCat(last, ".pidns-", static_cast<unsigned long long>(st.st_ino));
}

}  // namespace

std::vector<std::string> AgentSocketCandidates(int pid, const std::string& explicit_path) {
  std::vector<std::string> out;
  if (!explicit_path.empty()) out.push_back(explicit_path);
  std::string control = TargetEnv(pid, "PROCMIG_CONTROL");
  if (!control.empty()) out.push_back(control);
  std::vector<std::string> keys;
  if (std::string ns = NamespacedKey(pid); !ns.empty()) keys.push_back(ns);
  keys.push_back(absl::StrCat(pid));
  std::string runtime = TargetEnv(pid, "XDG_RUNTIME_DIR");
  struct stat st;
  uid_t uid = stat(absl::StrCat("/proc/", pid).c_str(), &st) == 0 ? st.st_uid : getuid();
  for (const std::string& key : keys) {
    if (!runtime.empty()) out.push_back(absl::StrCat(runtime, "/procmig/", key, ".sock"));
    if (uid == 0) out.push_back(absl::StrCat("/run/procmig/", key, ".sock"));
    out.push_back(absl::StrCat("/tmp/procmig-", uid, "/", key, ".sock"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<AgentConnection>> AgentConnection::Connect(
    int pid, const std::string& explicit_path) {
  struct stat st;
  if (pid <= 0 || stat(absl::StrCat("/proc/", pid).c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("connect to agent of pid ", pid, ": no such process"));
  }
  std::vector<std::string> candidates = AgentSocketCandidates(pid, explicit_path);
  // The explicit path is authoritative; otherwise the first candidate that exists.
  std::string path = candidates.front();
  if (explicit_path.empty()) {
    for (const std::string& c : candidates) {
      if (stat(c.c_str(), &st) == 0) {
        path = c;
        break;
      }
    }
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(
        absl::StrCat("connect to agent of pid ", pid, ": socket path too long: ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("connect to agent: socket", errno);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    absl::Status s = ErrnoStatus(absl::StatusCode::kUnavailable,
                                 absl::StrCat("connect to agent of pid ", pid, " at ", path), err);
    return absl::Status(s.code(), absl::StrCat(s.message(), " (is it running under procmig run?)"));
  }
  return std::unique_ptr<AgentConnection>(new AgentConnection(fd, path, pid));
}

AgentConnection::AgentConnection(int fd, std::string path, int pid)
    : fd_(fd), path_(std::move(path)), pid_(pid) {}

AgentConnection::~AgentConnection() { close(fd_); }

absl::Status AgentConnection::Send(const ControlMessage& m) {
  std::string line = EncodeControl(m);
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("send request to agent of pid ", pid_), errno);
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<ControlMessage> AgentConnection::Receive() {
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      absl::StatusOr<ControlMessage> m = DecodeControl(line);
      if (!m.ok()) {
        return absl::DataLossError(
            absl::StrCat("reply from agent of pid ", pid_, ": ", m.status().message()));
      }
      return m;
    }
    if (buffer_.size() > kMaxControlLine) {
      return absl::DataLossError(absl::StrCat("reply from agent of pid ", pid_,
                                              ": line longer than ", kMaxControlLine, " bytes"));
    }
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("read reply from agent of pid ", pid_), errno);
    if (n == 0) {
      return absl::UnavailableError(absl::StrCat(
          "read reply from agent of pid ", pid_, ": the agent closed the connection",
          ProcessEnded(pid_) ? " (the process has exited: it ended during the migration)" : ""));
    }
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace procmig
