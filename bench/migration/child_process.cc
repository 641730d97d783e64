#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

extern char** environ;

namespace procmig::bench {
namespace {

long long NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

}  // namespace

ChildProcess::~ChildProcess() {
  Kill();
  if (out_fd_ >= 0) close(out_fd_);
}

bool ChildProcess::Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                         const std::string& stderr_path, std::string* error,
                         const std::string& stdout_path) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + strerror(errno);
    return false;
  }
  const int err_fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (stdout_path.empty()) {
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
  }
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) env_store.emplace_back(*e);
  for (const auto& e : env) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (err_fd >= 0) close(err_fd);
  if (rc != 0) {
    close(pipefd[0]);
    pid_ = -1;
    *error = "spawn " + argv[0] + ": " + strerror(rc);
    return false;
  }
  out_fd_ = pipefd[0];
  return true;
}

bool ChildProcess::ReadLine(std::string* line, int timeout_ms) {
  const long long deadline = NowMs() + timeout_ms;
  for (;;) {
    const size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      *line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return true;
    }
    const long long left = deadline - NowMs();
    if (left <= 0 || out_fd_ < 0) return false;
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      close(out_fd_);
      out_fd_ = -1;
      if (buffered_.empty()) return false;
      *line = buffered_;
      buffered_.clear();
      return true;
    }
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

bool ChildProcess::Wait(int timeout_ms, int* code) {
  if (pid_ < 0 || reaped_) return false;
  const long long deadline = NowMs() + timeout_ms;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    if (NowMs() >= deadline) return false;
    usleep(10000);
  }
}

void ChildProcess::Kill() {
  if (pid_ < 0 || reaped_) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  reaped_ = true;
}

bool WaitForLineInFile(const std::string& path, const std::string& prefix, int timeout_ms) {
  const long long deadline = NowMs() + timeout_ms;
  while (NowMs() < deadline) {
    if (FILE* f = fopen(path.c_str(), "r")) {
      char line[1024];
      bool found = false;
      while (!found && fgets(line, sizeof(line), f) != nullptr) {
        found = strncmp(line, prefix.c_str(), prefix.size()) == 0;
      }
      fclose(f);
      if (found) return true;
    }
    usleep(20000);
  }
  return false;
}

bool RunQuiet(const std::vector<std::string>& argv, int timeout_ms) {
  ChildProcess c;
  std::string error;
  if (!c.Start(argv, {}, "/dev/null", &error)) return false;
  std::string line;
  while (c.ReadLine(&line, timeout_ms)) {
  }
  int code = -1;
  return c.Wait(timeout_ms, &code) && code == 0;
}

}  // namespace procmig::bench
