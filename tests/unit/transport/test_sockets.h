// Test helper: connected descriptor pairs over the kernel transports a user would have.
#ifndef PROCMIG_TESTS_UNIT_TRANSPORT_TEST_SOCKETS_H_
#define PROCMIG_TESTS_UNIT_TRANSPORT_TEST_SOCKETS_H_

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "transport/endpoint.h"
#include "transport/unique_fd.h"

namespace procmig::testing {

using FdPair = std::pair<UniqueFd, UniqueFd>;

inline FdPair UnixSocketPair() {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// first = the connecting side, second = the accepted side.
inline FdPair TcpLoopbackPair(const SocketOptions& options = {}) {
  auto ep = Endpoint::Parse("127.0.0.1:0");
  REQUIRE(ep.ok());
  auto listener = Listen(*ep, options);
  REQUIRE(listener.ok());
  auto bound = LocalEndpoint(listener->get());
  REQUIRE(bound.ok());
  auto client = Connect(*bound, options);
  REQUIRE(client.ok());
  auto server = Accept(listener->get(), options, 5000);
  REQUIRE(server.ok());
  return {std::move(*client), std::move(*server)};
}

// A fresh path under the test's temporary directory (removed by the caller).
inline std::string TempPath(const char* stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/procmig_transport_" + stem + "_" +
         std::to_string(getpid());
}

}  // namespace procmig::testing

#endif  // PROCMIG_TESTS_UNIT_TRANSPORT_TEST_SOCKETS_H_
