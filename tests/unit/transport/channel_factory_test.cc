#include "transport/channel_factory.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include "test_sockets.h"

namespace procmig {
namespace {

// Sets PROCMIG_TRANSPORT for one scope (tests in this binary run on one thread).
class ScopedEnv {
 public:
  explicit ScopedEnv(const char* value) {
    if (value == nullptr) {
      unsetenv(kTransportEnvVar);
    } else {
      setenv(kTransportEnvVar, value, 1);
    }
  }
  ~ScopedEnv() { unsetenv(kTransportEnvVar); }
};

void CheckWorks(Channel& a, Channel& b) {
  REQUIRE(a.Write("ping", 4).ok());
  char buf[4];
  REQUIRE(b.ReadExact(buf, 4).ok());
  CHECK(std::string(buf, 4) == "ping");
}

TEST_CASE("auto picks io_uring where the kernel allows it") {
  ScopedEnv env(nullptr);
  auto fds = testing::UnixSocketPair();
  auto a = OpenChannel(std::move(fds.first), TransportConfig{}, "a");
  REQUIRE(a.ok());
  if (a->kind != TransportKind::kIoUring) {
    std::printf("SKIP: io_uring unavailable: %s\n", a->reason.c_str());
    std::exit(77);
  }
  CHECK(a->channel->kind() == "io_uring");
  CHECK(a->reason == "io_uring (queue depth 64): available");
  auto b = OpenChannel(std::move(fds.second), TransportConfig{}, "b");
  REQUIRE(b.ok());
  CheckWorks(*a->channel, *b->channel);
}

TEST_CASE("auto falls back to POSIX when io_uring_setup is refused, and says why") {
  ScopedEnv env(nullptr);
  TransportConfig c;
  c.io_uring_setup_errno_for_test = EPERM;  // what Docker's default seccomp profile does
  auto fds = testing::UnixSocketPair();
  auto a = OpenChannel(std::move(fds.first), c, "tcp 10.0.0.1:7000");
  REQUIRE(a.ok());
  CHECK(a->kind == TransportKind::kPosix);
  CHECK(a->channel->kind() == "posix");
  CHECK(a->reason ==
        "io_uring_setup (queue depth 64) for tcp 10.0.0.1:7000: EPERM (Operation not permitted); "
        "using POSIX readv/writev");
  auto b = OpenChannel(std::move(fds.second), c, "b");
  REQUIRE(b.ok());
  CheckWorks(*a->channel, *b->channel);
}

TEST_CASE("an explicit io_uring choice fails instead of falling back") {
  ScopedEnv env("posix");  // ignored: explicit config wins
  TransportConfig c;
  c.kind = TransportKind::kIoUring;
  c.io_uring_setup_errno_for_test = ENOSYS;
  auto fds = testing::UnixSocketPair();
  auto a = OpenChannel(std::move(fds.first), c, "x");
  CHECK(a.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(a.status().message() ==
        "io_uring_setup (queue depth 64) for x: ENOSYS (Function not implemented)");
}

TEST_CASE("explicit posix and PROCMIG_TRANSPORT=posix both choose POSIX with the reason") {
  {
    ScopedEnv env(nullptr);
    TransportConfig c;
    c.kind = TransportKind::kPosix;
    auto a = OpenChannel(testing::UnixSocketPair().first, c, "x");
    REQUIRE(a.ok());
    CHECK(a->kind == TransportKind::kPosix);
    CHECK(a->reason == "POSIX readv/writev: chosen by config");
  }
  {
    ScopedEnv env("posix");
    auto a = OpenChannel(testing::UnixSocketPair().first, TransportConfig{}, "x");
    REQUIRE(a.ok());
    CHECK(a->kind == TransportKind::kPosix);
    CHECK(a->reason == "POSIX readv/writev: chosen by PROCMIG_TRANSPORT=posix");
  }
  {
    ScopedEnv env("posix");
    TransportConfig c;
    c.read_environment = false;
    c.io_uring_setup_errno_for_test = EPERM;
    auto a = OpenChannel(testing::UnixSocketPair().first, c, "x");
    REQUIRE(a.ok());
    CHECK(a->reason.find("EPERM") != std::string::npos);  // env not consulted
  }
}

TEST_CASE("a bad PROCMIG_TRANSPORT or config is InvalidArgument") {
  {
    ScopedEnv env("uring");
    auto a = OpenChannel(testing::UnixSocketPair().first, TransportConfig{}, "x");
    CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(a.status().message() == "PROCMIG_TRANSPORT=uring: expected auto, io_uring or posix");
  }
  ScopedEnv env(nullptr);
  TransportConfig c;
  c.queue_depth = 3;
  CHECK(OpenChannel(testing::UnixSocketPair().first, c, "x").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace procmig
