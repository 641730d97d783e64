#include "transport/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

absl::Status ParseError(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("parse endpoint \"", text, "\": ", why));
}

// Fills a sockaddr_un; the abstract namespace is spelled with a leading '@'.
absl::StatusOr<socklen_t> UnixAddress(const std::string& path, sockaddr_un* sun) {
  *sun = sockaddr_un{};
  sun->sun_family = AF_UNIX;
  if (path.size() >= sizeof(sun->sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unix socket path \"", path, "\" is longer than ", sizeof(sun->sun_path) - 1, " bytes"));
  }
  std::memcpy(sun->sun_path, path.data(), path.size());
  if (path[0] == '@') sun->sun_path[0] = '\0';
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                (path[0] == '@' ? 0 : 1));
}

absl::Status ApplyOptions(int fd, int family, const SocketOptions& o, const std::string& what) {
  int one = 1;
  if (family != AF_UNIX && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return ErrnoStatus(absl::StrCat("setsockopt TCP_NODELAY ", what), errno);
  }
  if (o.send_buffer_bytes > 0 &&
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.send_buffer_bytes, sizeof(int)) != 0) {
    return ErrnoStatus(absl::StrCat("setsockopt SO_SNDBUF ", what), errno);
  }
  if (o.recv_buffer_bytes > 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.recv_buffer_bytes, sizeof(int)) != 0) {
    return ErrnoStatus(absl::StrCat("setsockopt SO_RCVBUF ", what), errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<addrinfo*> Resolve(const Endpoint& e, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string port = absl::StrCat(e.port);
  int r = getaddrinfo(e.host.empty() ? nullptr : e.host.c_str(), port.c_str(), &hints, &res);
  if (r != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resolve ", e.ToString(), ": ", gai_strerror(r)));
  }
  return res;
}

}  // namespace

absl::StatusOr<Endpoint> Endpoint::Parse(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  Endpoint e;
  if (text.empty()) return ParseError(text, "empty");
  if (absl::StartsWith(text, "unix:")) {
    e.kind = Kind::kUnix;
    e.path = std::string(text.substr(5));
    if (e.path.empty()) return ParseError(text, "no socket path after \"unix:\"");
    return e;
  }
  if (absl::StartsWith(text, "file:")) {
    e.kind = Kind::kFile;
    e.path = std::string(text.substr(5));
    if (e.path.empty()) return ParseError(text, "no path after \"file:\"");
    return e;
  }
  absl::string_view host;
  absl::string_view port;
  if (text[0] == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) return ParseError(text, "missing ']'");
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return ParseError(text, "expected \":PORT\" after \"]\"");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (host.empty()) return ParseError(text, "empty IPv6 address");
  } else {
    size_t colon = text.rfind(':');
    bool looks_like_path = text.find('/') != absl::string_view::npos || text[0] == '.';
    if (colon == absl::string_view::npos || looks_like_path) {
      if (looks_like_path) {
        e.kind = Kind::kFile;
        e.path = std::string(text);
        return e;
      }
      return ParseError(text, "expected HOST:PORT, [V6]:PORT, unix:/PATH or a file path");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return ParseError(text, "an IPv6 address needs brackets: [ADDR]:PORT");
    }
  }
  uint32_t p = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &p) || p > 65535 ||
      port.find_first_not_of("0123456789") != absl::string_view::npos) {
    return ParseError(text, absl::StrCat("port \"", port, "\" is not a number in [0, 65535]"));
  }
  e.kind = Kind::kTcp;
  e.host = std::string(host);
  e.port = static_cast<uint16_t>(p);
  return e;
}

std::string Endpoint::ToString() const {
  switch (kind) {
    case Kind::kTcp:
      if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
      return absl::StrCat(host, ":", port);
    case Kind::kUnix:
      return absl::StrCat("unix:", path);
    case Kind::kFile:
      return absl::StrCat("file:", path);
  }
  return "?";
}

absl::StatusOr<UniqueFd> Listen(const Endpoint& e, const SocketOptions& options) {
  const std::string what = e.ToString();
  if (e.kind == Endpoint::Kind::kUnix) {
    sockaddr_un sun;
    ASSIGN_OR_RETURN(socklen_t len, UnixAddress(e.path, &sun));
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus(absl::StrCat("socket ", what), errno);
    if (e.path[0] != '@') {
      struct stat st;
      if (lstat(e.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(e.path.c_str());
    }
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), len) != 0) {
      return ErrnoStatus(absl::StrCat("bind ", what), errno);
    }
    if (listen(fd.get(), options.backlog) != 0) {
      return ErrnoStatus(absl::StrCat("listen ", what), errno);
    }
    return fd;
  }
  if (e.kind != Endpoint::Kind::kTcp) {
    return absl::InvalidArgumentError(absl::StrCat("listen ", what, ": not a socket endpoint"));
  }
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(e, /*passive=*/true));
  absl::Status last = absl::InternalError(absl::StrCat("listen ", what, ": no address"));
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoStatus(absl::StrCat("socket ", what), errno);
      continue;
    }
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // Buffers set before listen() are inherited by accepted sockets.
    absl::Status opt = ApplyOptions(fd.get(), ai->ai_family, options, what);
    if (!opt.ok()) {
      last = opt;
      continue;
    }
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      last = ErrnoStatus(absl::StrCat("bind ", what), errno);
      continue;
    }
    if (listen(fd.get(), options.backlog) != 0) {
      last = ErrnoStatus(absl::StrCat("listen ", what), errno);
      continue;
    }
    freeaddrinfo(res);
    return fd;
  }
  freeaddrinfo(res);
  return last;
}

absl::StatusOr<Endpoint> LocalEndpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return ErrnoStatus("getsockname", errno);
  }
  Endpoint e;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    e.host = buf;
    e.port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    e.host = buf;
    e.port = ntohs(sin6->sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    auto* sun = reinterpret_cast<sockaddr_un*>(&ss);
    e.kind = Endpoint::Kind::kUnix;
    size_t n = len - offsetof(sockaddr_un, sun_path);
    if (n > 0 && sun->sun_path[0] == '\0') {
      // StrCat, not "@" + std::string: GCC 12 at -O3 warns (-Wrestrict) about the latter.
      e.path = absl::StrCat("@", absl::string_view(sun->sun_path + 1, n - 1));
    } else {
      e.path = std::string(sun->sun_path, strnlen(sun->sun_path, n));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("getsockname: family ", ss.ss_family));
  }
  return e;
}

absl::StatusOr<UniqueFd> Accept(int listen_fd, const SocketOptions& options, int timeout_ms) {
  pollfd p{listen_fd, POLLIN, 0};
  for (;;) {
    int r = poll(&p, 1, timeout_ms);
    if (r > 0) break;
    if (r == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("accept: no connection within ", timeout_ms, " ms"));
    }
    if (errno != EINTR) return ErrnoStatus("accept: poll", errno);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd;
  do {
    fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus("accept", errno);
  UniqueFd out(fd);
  RETURN_IF_ERROR(ApplyOptions(fd, ss.ss_family, options, "accepted socket"));
  return out;
}

absl::StatusOr<UniqueFd> Connect(const Endpoint& e, const SocketOptions& options) {
  const std::string what = e.ToString();
  if (e.kind == Endpoint::Kind::kUnix) {
    sockaddr_un sun;
    ASSIGN_OR_RETURN(socklen_t len, UnixAddress(e.path, &sun));
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus(absl::StrCat("socket ", what), errno);
    RETURN_IF_ERROR(ApplyOptions(fd.get(), AF_UNIX, options, what));
    int r;
    do {
      r = connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), len);
    } while (r != 0 && errno == EINTR);
    if (r != 0) return ErrnoStatus(absl::StrCat("connect ", what), errno);
    return fd;
  }
  if (e.kind != Endpoint::Kind::kTcp) {
    return absl::InvalidArgumentError(absl::StrCat("connect ", what, ": not a socket endpoint"));
  }
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(e, /*passive=*/false));
  absl::Status last = absl::InternalError(absl::StrCat("connect ", what, ": no address"));
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoStatus(absl::StrCat("socket ", what), errno);
      continue;
    }
    absl::Status opt = ApplyOptions(fd.get(), ai->ai_family, options, what);
    if (!opt.ok()) {
      last = opt;
      continue;
    }
    int r = connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINTR) {
      // The connection continues in the background; wait for its outcome.
      pollfd p{fd.get(), POLLOUT, 0};
      while (poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      int err = 0;
      socklen_t el = sizeof(err);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
      r = err == 0 ? 0 : -1;
      errno = err;
    }
    if (r != 0) {
      last = ErrnoStatus(absl::StrCat("connect ", what), errno);
      continue;
    }
    freeaddrinfo(res);
    return fd;
  }
  freeaddrinfo(res);
  return last;
}

absl::StatusOr<UniqueFd> OpenForWrite(const Endpoint& e) {
  if (e.kind != Endpoint::Kind::kFile) {
    return absl::InvalidArgumentError(absl::StrCat("open ", e.ToString(), ": not a file"));
  }
  int fd = open(e.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", e.path, " for writing"), errno);
  return UniqueFd(fd);
}

absl::StatusOr<UniqueFd> OpenForRead(const Endpoint& e) {
  if (e.kind != Endpoint::Kind::kFile) {
    return absl::InvalidArgumentError(absl::StrCat("open ", e.ToString(), ": not a file"));
  }
  int fd = open(e.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", e.path, " for reading"), errno);
  return UniqueFd(fd);
}

}  // namespace procmig
