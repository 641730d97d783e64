// `procmig migrate PID --to HOST:PORT` and `procmig checkpoint PID --to DIR|HOST:PORT`: tell the
// agent inside PID to send, and follow its progress until DONE or ERROR.
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "command.h"
#include "procmig/agent_client.h"
#include "procmig/control.h"
#include "procmig/destination.h"

namespace procmig::agent {
namespace {

// "123", "64K", "1M", "2G" (binary multiples).
bool ParseSize(std::string_view s, uint64_t* out) {
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K':
      case 'k':
        mult = 1ull << 10;
        break;
      case 'M':
      case 'm':
        mult = 1ull << 20;
        break;
      case 'G':
      case 'g':
        mult = 1ull << 30;
        break;
      default:
        break;
    }
    if (mult != 1) s.remove_suffix(1);
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return false;
  if (v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

template <typename T>
bool ParseInt(std::string_view s, T* out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

std::string Human(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  } else if (bytes >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(1ull << 20));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  }
  return buf;
}

// True for "HOST:PORT" and "unix:/path"; a directory target is anything else.
bool IsNetworkTarget(std::string_view t) {
  if (t.starts_with("unix:")) return true;
  size_t colon = t.rfind(':');
  if (colon == std::string_view::npos || t.find('/') != std::string_view::npos) return false;
  uint32_t port = 0;
  return ParseInt(t.substr(colon + 1), &port);
}

// Parses the options shared by migrate and checkpoint. Returns an exit code on error.
std::optional<int> ParseOptions(const char* cmd, const ArgParser& p, MigrationOptions* o) {
  auto bad = [&](const std::string& m) { return std::optional<int>(Fail(cmd, m, 2)); };
  o->target = std::string(p.Value("to").value_or(""));
  if (o->target.empty()) return bad("--to is required (see --help)");
  if (auto v = p.Value("max-bandwidth"); v && !ParseSize(*v, &o->max_bandwidth)) {
    return bad("--max-bandwidth needs bytes per second, e.g. 100M");
  }
  if (auto v = p.Value("downtime-limit"); v && !ParseInt(*v, &o->downtime_limit_ms)) {
    return bad("--downtime-limit needs milliseconds");
  }
  if (auto v = p.Value("ack-timeout"); v && !ParseInt(*v, &o->final_timeout_ms)) {
    return bad("--ack-timeout needs milliseconds");
  }
  if (auto v = p.Value("max-iterations"); v && !ParseInt(*v, &o->max_iterations)) {
    return bad("--max-iterations needs a number");
  }
  o->xbzrle = p.Has("xbzrle");
  if (auto v = p.Value("xbzrle-cache"); v && !ParseSize(*v, &o->xbzrle_cache_bytes)) {
    return bad("--xbzrle-cache needs bytes, e.g. 64M");
  }
  if (auto v = p.Value("compress"); v && !ParseInt(*v, &o->compress_level)) {
    return bad("--compress needs a zlib level 0..9");
  }
  if (auto v = p.Value("compress-threads"); v && !ParseInt(*v, &o->compress_threads)) {
    return bad("--compress-threads needs a number");
  }
  o->compress_always = p.Has("compress-always");
  if (auto v = p.Value("channels"); v && !ParseInt(*v, &o->channels)) {
    return bad("--channels needs a number");
  }
  if (auto v = p.Value("tracker")) o->tracker = std::string(*v);
  if (auto v = p.Value("transport")) o->transport = std::string(*v);
  o->auto_converge = !p.Has("no-auto-converge");
  o->verify_final = p.Has("verify");
  if (absl::Status s = o->Validate(); !s.ok()) return bad(std::string(s.message()));
  return std::nullopt;
}

std::string ProgressLine(const MigrationStats& s) {
  char buf[256];
  std::snprintf(
      buf, sizeof buf,
      "%-13s iter %-3llu sent %-11s remaining %-11s rate %s/s  dirty %llu pages/s  "
      "expected downtime %llu ms%s",
      std::string(PhaseName(s.phase)).c_str(), static_cast<unsigned long long>(s.iteration),
      Human(s.transferred_bytes).c_str(), Human(s.remaining_bytes).c_str(),
      Human(s.throughput_bps).c_str(), static_cast<unsigned long long>(s.dirty_pages_rate),
      static_cast<unsigned long long>(s.expected_downtime_ms),
      s.throttle_percent ? (" throttle " + std::to_string(s.throttle_percent) + "%").c_str() : "");
  return buf;
}

// Sends MIGRATE and follows the replies. Returns the exit code.
int Drive(const char* cmd, int pid, const std::string& control, const MigrationOptions& o,
          bool json) {
  auto conn = AgentConnection::Connect(pid, control);
  if (!conn.ok()) return Fail(cmd, std::string(conn.status().message()));
  ControlMessage req;
  req.verb = ControlVerb::kMigrate;
  req.options = o;
  if (absl::Status s = (*conn)->Send(req); !s.ok()) return Fail(cmd, std::string(s.message()));
  const bool tty = !json && isatty(STDOUT_FILENO);
  for (;;) {
    auto m = (*conn)->Receive();
    if (!m.ok()) {
      if (tty) std::fputs("\n", stdout);
      return Fail(cmd, std::string(m.status().message()));
    }
    if (m->verb == ControlVerb::kStats || m->verb == ControlVerb::kDone) {
      if (tty) {
        std::printf("\r\033[K%s", ProgressLine(m->stats).c_str());
        if (m->verb == ControlVerb::kDone) {
          const MigrationStats& s = m->stats;
          std::printf(
              "\ndone: %s in %llu ms, downtime %llu ms (park %.1f, final sync %.1f, last %llu "
              "pages and the process state %.1f) + %llu ms waiting for the ack\n",
              Human(s.transferred_bytes).c_str(), static_cast<unsigned long long>(s.total_ms),
              static_cast<unsigned long long>(s.downtime_ms), s.park_us / 1000.0,
              s.sync_us / 1000.0, static_cast<unsigned long long>(s.final_pages),
              (s.spawn_us + s.final_send_us) / 1000.0,
              static_cast<unsigned long long>(s.ack_wait_ms));
        }
      } else {
        std::printf("%s\n", StatsToJson(m->stats).c_str());
      }
      std::fflush(stdout);
      if (m->verb == ControlVerb::kDone) return 0;
    } else if (m->verb == ControlVerb::kError) {
      if (tty) std::fputs("\n", stdout);
      return Fail(cmd, std::string(m->ToStatus().ToString()));
    } else {
      return Fail(cmd, "unexpected reply from the agent");
    }
  }
}

constexpr std::string_view kValued[] = {
    "to",          "max-bandwidth", "downtime-limit", "max-iterations",
    "ack-timeout", "xbzrle-cache",  "compress",       "compress-threads",
    "channels",    "tracker",       "transport",      "control"};

std::optional<int> ParsePid(const char* cmd, const ArgParser& p, int* pid) {
  if (p.positional().size() != 1) return Fail(cmd, "needs exactly one PID (see --help)", 2);
  if (!ParseInt(p.positional()[0], pid) || *pid <= 0) {
    return Fail(cmd, "PID must be a positive number", 2);
  }
  return std::nullopt;
}

}  // namespace

int RunMigrateCommand(std::span<const std::string_view> args) {
  ArgParser p("migrate", {"xbzrle", "no-auto-converge", "json", "compress-always", "verify"},
              std::vector<std::string_view>(std::begin(kValued), std::end(kValued)));
  if (!p.Parse(args)) return 2;
  int pid = 0;
  if (auto rc = ParsePid("migrate", p, &pid)) return *rc;
  MigrationOptions o;
  o.mode = MigrationMode::kMigrate;
  if (auto rc = ParseOptions("migrate", p, &o)) return *rc;
  if (!IsNetworkTarget(o.target)) {
    return Fail("migrate", "--to needs HOST:PORT or unix:/path (use checkpoint for a directory)",
                2);
  }
  return Drive("migrate", pid, std::string(p.Value("control").value_or("")), o, p.Has("json"));
}

int RunCheckpointCommand(std::span<const std::string_view> args) {
  ArgParser p("checkpoint",
              {"xbzrle", "no-auto-converge", "json", "leave-running", "compress-always", "verify"},
              std::vector<std::string_view>(std::begin(kValued), std::end(kValued)));
  if (!p.Parse(args)) return 2;
  int pid = 0;
  if (auto rc = ParsePid("checkpoint", p, &pid)) return *rc;
  MigrationOptions o;
  o.mode = MigrationMode::kCheckpoint;
  o.leave_running = p.Has("leave-running");
  if (auto rc = ParseOptions("checkpoint", p, &o)) return *rc;
  std::string control(p.Value("control").value_or(""));
  if (IsNetworkTarget(o.target)) return Drive("checkpoint", pid, control, o, p.Has("json"));

  // A directory: receive in-process on a private UNIX socket and store there.
  std::string sockdir = "/tmp/procmig-ckpt-XXXXXX";
  if (mkdtemp(sockdir.data()) == nullptr) {
    return Fail("checkpoint",
                "create a private socket directory in /tmp: " + std::string(std::strerror(errno)));
  }
  ReceiveOptions ro;
  ro.listen = "unix:" + sockdir + "/receiver.sock";
  ro.store_dir = o.target;
  ro.once = true;
  ro.transport = o.transport;
  if (absl::Status s = ro.Validate(); !s.ok())
    return Fail("checkpoint", std::string(s.message()), 2);
  std::mutex mu;
  std::condition_variable cv;
  bool listening = false;
  std::optional<absl::StatusOr<ReceiveReport>> result;
  std::thread receiver([&] {
    auto r = RunReceiver(ro, [&](const ReceiveEvent& e) {
      if (e.kind != ReceiveEvent::Kind::kListening) return;
      std::lock_guard<std::mutex> l(mu);
      listening = true;
      cv.notify_all();
    });
    std::lock_guard<std::mutex> l(mu);
    result = std::move(r);
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return listening || result.has_value(); });
    if (!listening) {
      l.unlock();
      receiver.join();
      rmdir(sockdir.c_str());
      return Fail("checkpoint", std::string(result->status().message()));
    }
  }
  std::string image_dir = o.target;
  o.target = ro.listen;
  int rc = Drive("checkpoint", pid, control, o, p.Has("json"));
  if (rc != 0) {
    // The agent failed before or while sending; the receiver may never see a sender.
    receiver.detach();
    unlink((sockdir + "/receiver.sock").c_str());
    rmdir(sockdir.c_str());
    return rc;
  }
  receiver.join();
  unlink((sockdir + "/receiver.sock").c_str());
  rmdir(sockdir.c_str());
  if (!result->ok()) return Fail("checkpoint", std::string(result->status().message()));
  if (!p.Has("json")) std::fputs(RenderReceiveReport(**result).c_str(), stdout);
  return 0;
}

}  // namespace procmig::agent
