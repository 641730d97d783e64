#include "transport/endpoint.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "test_sockets.h"

namespace procmig {
namespace {

TEST_CASE("parse accepts every documented form and round-trips") {
  struct Case {
    const char* text;
    Endpoint::Kind kind;
    const char* host;
    int port;
    const char* path;
    const char* canonical;
  } cases[] = {
      {"127.0.0.1:7000", Endpoint::Kind::kTcp, "127.0.0.1", 7000, "", "127.0.0.1:7000"},
      {"localhost:0", Endpoint::Kind::kTcp, "localhost", 0, "", "localhost:0"},
      {"[::1]:65535", Endpoint::Kind::kTcp, "::1", 65535, "", "[::1]:65535"},
      {":9", Endpoint::Kind::kTcp, "", 9, "", ":9"},
      {"unix:/run/p.sock", Endpoint::Kind::kUnix, "", 0, "/run/p.sock", "unix:/run/p.sock"},
      {"unix:@abstract", Endpoint::Kind::kUnix, "", 0, "@abstract", "unix:@abstract"},
      {"file:ckpt.img", Endpoint::Kind::kFile, "", 0, "ckpt.img", "file:ckpt.img"},
      {"/var/tmp/a:b", Endpoint::Kind::kFile, "", 0, "/var/tmp/a:b", "file:/var/tmp/a:b"},
      {"./stream", Endpoint::Kind::kFile, "", 0, "./stream", "file:./stream"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    auto e = Endpoint::Parse(c.text);
    REQUIRE(e.ok());
    CHECK(e->kind == c.kind);
    CHECK(e->host == c.host);
    CHECK(e->port == c.port);
    CHECK(e->path == c.path);
    CHECK(e->ToString() == c.canonical);
    auto again = Endpoint::Parse(e->ToString());
    REQUIRE(again.ok());
    CHECK(again->ToString() == c.canonical);
  }
}

TEST_CASE("parse rejects bad input with the reason") {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"", "parse endpoint \"\": empty"},
      {"host", "parse endpoint \"host\": expected HOST:PORT, [V6]:PORT, unix:/PATH or a file path"},
      {"h:70000", "parse endpoint \"h:70000\": port \"70000\" is not a number in [0, 65535]"},
      {"h:-1", "parse endpoint \"h:-1\": port \"-1\" is not a number in [0, 65535]"},
      {"h:", "parse endpoint \"h:\": port \"\" is not a number in [0, 65535]"},
      {"::1:80", "parse endpoint \"::1:80\": an IPv6 address needs brackets: [ADDR]:PORT"},
      {"[::1]80", "parse endpoint \"[::1]80\": expected \":PORT\" after \"]\""},
      {"[::1:80", "parse endpoint \"[::1:80\": missing ']'"},
      {"unix:", "parse endpoint \"unix:\": no socket path after \"unix:\""},
  };
  for (const Case& c : cases) {
    auto e = Endpoint::Parse(c.text);
    CHECK(e.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(e.status().message() == c.message);
  }
}

TEST_CASE("tcp listen on port 0, connect, accept; TCP_NODELAY and buffer sizes applied") {
  SocketOptions opts;
  opts.send_buffer_bytes = 1 << 20;
  auto pair = testing::TcpLoopbackPair(opts);
  int nodelay = 0;
  socklen_t len = sizeof(nodelay);
  REQUIRE(getsockopt(pair.first.get(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0);
  CHECK(nodelay == 1);
  int sndbuf = 0;
  len = sizeof(sndbuf);
  REQUIRE(getsockopt(pair.first.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0);
  CHECK(sndbuf >= (1 << 20));  // the kernel doubles what it is given
  CHECK(write(pair.first.get(), "x", 1) == 1);
  char c = 0;
  CHECK(read(pair.second.get(), &c, 1) == 1);
  CHECK(c == 'x');
}

TEST_CASE("connect to a closed port is Unavailable naming the address and errno") {
  auto ep = Endpoint::Parse("127.0.0.1:0");
  auto listener = Listen(*ep);
  REQUIRE(listener.ok());
  auto bound = LocalEndpoint(listener->get());
  REQUIRE(bound.ok());
  listener->Reset();  // nobody listens there now
  auto c = Connect(*bound);
  CHECK(c.status().code() == absl::StatusCode::kUnavailable);
  CHECK(c.status().message() ==
        "connect " + bound->ToString() + ": ECONNREFUSED (Connection refused)");
}

TEST_CASE("accept times out with DeadlineExceeded") {
  auto listener = Listen(*Endpoint::Parse("127.0.0.1:0"));
  REQUIRE(listener.ok());
  auto a = Accept(listener->get(), {}, 10);
  CHECK(a.status().code() == absl::StatusCode::kDeadlineExceeded);
}

TEST_CASE("unix sockets: path (stale file replaced) and abstract namespace") {
  const std::string path = testing::TempPath("ep.sock");
  for (std::string text : {"unix:" + path, "unix:" + path, std::string("unix:@procmig-ep-test")}) {
    auto ep = Endpoint::Parse(text);
    REQUIRE(ep.ok());
    auto listener = Listen(*ep);  // the second round finds the first round's socket file
    REQUIRE(listener.ok());
    auto bound = LocalEndpoint(listener->get());
    REQUIRE(bound.ok());
    CHECK(bound->ToString() == text);
    auto client = Connect(*ep);
    REQUIRE(client.ok());
    auto server = Accept(listener->get(), {}, 5000);
    REQUIRE(server.ok());
    CHECK(write(client->get(), "y", 1) == 1);
    char c = 0;
    CHECK(read(server->get(), &c, 1) == 1);
    CHECK(c == 'y');
  }
  unlink(path.c_str());
}

TEST_CASE("files: open for write then read; errors name the path") {
  const std::string path = testing::TempPath("ep.file");
  auto ep = Endpoint::Parse("file:" + path);
  REQUIRE(ep.ok());
  {
    auto w = OpenForWrite(*ep);
    REQUIRE(w.ok());
    CHECK(write(w->get(), "abc", 3) == 3);
  }
  auto r = OpenForRead(*ep);
  REQUIRE(r.ok());
  char buf[4] = {};
  CHECK(read(r->get(), buf, 4) == 3);
  CHECK(std::string(buf) == "abc");
  unlink(path.c_str());
  auto missing = OpenForRead(*ep);
  CHECK(missing.status().message() ==
        "open " + path + " for reading: ENOENT (No such file or directory)");
  CHECK(OpenForWrite(*Endpoint::Parse("1.2.3.4:5")).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace procmig
