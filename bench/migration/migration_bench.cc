// migration_bench: the migration figures, measured by driving the real binaries
// (`procmig receive --once --store`, `procmig run -- mem_workload`, `procmig migrate --json`),
// next to the ceilings measured in the same run (ceiling.h). Prints figures, medians of --runs
// runs; never pass/fail. A scenario whose pieces are missing prints what it could not run and why.
//
//   migration_bench [--mib 1024] [--runs 3] [--store-root DIR] [--only NAME,...]
//
// Scenarios: random-1ch, random-2ch (random content, 1 or 2 channels), zero (touched zero pages),
// dirty-32 and dirty-32-xbzrle (a writer dirtying random pages at 32 MB/s, XBZRLE off/on).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ceiling.h"
#include "child_process.h"

namespace procmig::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Scenario {
  std::string name;
  std::string fill;  // "random" or "zero"
  int dirty_mbps;
  std::vector<std::string> migrate_opts;
};

struct Config {
  std::string procmig = PROCMIG_BIN;
  std::string workload = MEM_WORKLOAD_BIN;
  size_t mib = 1024;
  int runs = 3;
  std::string store_root = "/tmp";
  std::string only;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Numbers of a flat JSON object such as StatsToJson's; "phase" as a string.
std::map<std::string, double> ParseStats(const std::string& line, std::string* phase) {
  std::map<std::string, double> out;
  size_t at = 0;
  while ((at = line.find('"', at)) != std::string::npos) {
    const size_t end = line.find('"', at + 1);
    if (end == std::string::npos) break;
    const std::string key = line.substr(at + 1, end - at - 1);
    size_t v = line.find(':', end);
    if (v == std::string::npos) break;
    ++v;
    while (v < line.size() && line[v] == ' ') ++v;
    if (v < line.size() && line[v] == '"') {
      const size_t vend = line.find('"', v + 1);
      if (key == "phase") *phase = line.substr(v + 1, vend - v - 1);
      at = vend + 1;
    } else {
      out[key] = strtod(line.c_str() + v, nullptr);
      at = v;
    }
  }
  return out;
}

bool HasCommand(const Config& c, const char* cmd) {
  return access(c.procmig.c_str(), X_OK) == 0 && RunQuiet({c.procmig, cmd, "--help"}, 10000);
}

std::string FreeishPort(int salt) {
  return std::to_string(20000 + (getpid() * 7 + salt * 13) % 30000);
}

// One migration; false with `why` when it did not complete. Figures into `stats`.
bool RunOnce(const Config& c, const Scenario& s, int run, std::map<std::string, double>* stats,
             double* wall_s, std::string* why) {
  const std::string dir = c.store_root + "/procmig-bench-" + std::to_string(getpid()) + "-" +
                          s.name + "-" + std::to_string(run);
  const std::string log = dir + ".log";
  const std::string port = FreeishPort(run + static_cast<int>(s.name.size()) * 31);
  RunQuiet({"/bin/mkdir", "-p", dir}, 10000);
  ChildProcess receiver, workload, migrate;
  std::string err, line;
  bool ok = receiver.Start(
      {c.procmig, "receive", "--listen", "127.0.0.1:" + port, "--store", dir, "--once"}, {}, log,
      &err);
  const std::string ctl = dir + ".ctl";
  const std::string out = dir + ".out";
  ok = ok && workload.Start({c.procmig, "run", "--", c.workload, "--mib", std::to_string(c.mib),
                             "--fill", s.fill, "--dirty-mbps", std::to_string(s.dirty_mbps)},
                            {"PROCMIG_CONTROL=" + ctl}, log, &err, out);
  const bool ready = ok && WaitForLineInFile(out, "READY", 120000);
  if (!ok || !ready) {
    *why = ok ? "workload never printed READY (see " + log + ")" : err;
    return false;
  }
  for (int i = 0; i < 100 && access(ctl.c_str(), F_OK) != 0; ++i) usleep(50000);
  usleep(300000);  // the receiver is listening by now; let the writer reach its rate
  std::vector<std::string> argv = {c.procmig, "migrate",           std::to_string(workload.pid()),
                                   "--to",    "127.0.0.1:" + port, "--json"};
  argv.insert(argv.end(), s.migrate_opts.begin(), s.migrate_opts.end());
  const auto t0 = Clock::now();
  if (!migrate.Start(argv, {}, log, &err)) return (*why = err), false;
  std::string last, phase;
  while (migrate.ReadLine(&line, 300000)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  int code = -1;
  migrate.Wait(30000, &code);
  *wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  *stats = ParseStats(last, &phase);
  int rcode = -1;
  const bool received = receiver.Wait(60000, &rcode) && rcode == 0;
  RunQuiet({"/bin/rm", "-rf", dir, ctl, out}, 60000);
  if (code != 0 || phase != "done" || !received) {
    *why = "migrate exit " + std::to_string(code) + ", last phase '" + phase + "', receiver " +
           (received ? "ok" : "failed") + " (see " + log + ")";
    return false;
  }
  unlink(log.c_str());
  return true;
}

void RunScenario(const Config& c, const Scenario& s, double ceiling, double tcp) {
  std::map<std::string, std::vector<double>> series;
  std::vector<double> walls;
  std::string why;
  for (int r = 0; r < c.runs; ++r) {
    std::map<std::string, double> st;
    double wall = 0;
    if (!RunOnce(c, s, r, &st, &wall, &why)) {
      std::printf("%-16s run %d did not complete: %s\n", s.name.c_str(), r + 1, why.c_str());
      continue;
    }
    for (const auto& [k, v] : st) series[k].push_back(v);
    walls.push_back(wall);
  }
  if (walls.empty()) return;
  auto med = [&](const char* k) { return Median(series[k]); };
  const double mem = static_cast<double>(c.mib << 20);
  const double total_s = med("total_ms") / 1000;
  const double rate = total_s > 0 ? mem / total_s : 0;
  std::printf(
      "%-16s runs %zu  total %.2f s (wall %.2f s)  memory rate %.0f MB/s = %.2f of "
      "ceiling, %.2fx one TCP stream\n",
      s.name.c_str(), walls.size(), total_s, Median(walls), rate / 1e6,
      ceiling > 0 ? rate / ceiling : 0, tcp > 0 ? rate / tcp : 0);
  std::printf(
      "%-16s on the wire %.1f MiB (%.3f%% of memory)  iterations %.0f  throttle %.0f%%  "
      "pause %.0f ms to end of stream (expected %.0f) + ack wait %.0f ms  setup %.0f ms\n",
      "", med("transferred_bytes") / 1048576, 100 * med("transferred_bytes") / mem,
      med("iteration"), med("throttle_percent"), med("downtime_ms"), med("expected_downtime_ms"),
      med("ack_wait_ms"), med("setup_ms"));
  std::printf(
      "%-16s pages normal %.0f zero %.0f xbzrle %.0f (%.1f MiB, cache misses %.0f, "
      "overflows %.0f)  dirty rate %.0f pages/s\n",
      "", med("normal_pages"), med("zero_pages"), med("xbzrle_pages"),
      med("xbzrle_bytes") / 1048576, med("xbzrle_cache_misses"), med("xbzrle_overflows"),
      med("dirty_pages_rate"));
  if (s.dirty_mbps > 0) {
    std::printf(
        "%-16s %s (max iterations 30 by default)\n", "",
        med("iteration") < 30 ? "converged before the iteration limit" : "hit the iteration limit");
  }
}

int Main(int argc, char** argv) {
  Config c;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--mib")
      c.mib = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--runs")
      c.runs = std::atoi(v.c_str());
    else if (k == "--store-root")
      c.store_root = v;
    else if (k == "--only")
      c.only = v;
    else if (k == "--procmig")
      c.procmig = v;
    else {
      std::fprintf(stderr,
                   "usage: migration_bench [--mib N] [--runs N] [--store-root DIR] "
                   "[--only NAME,...]\n");
      return 2;
    }
  }
  const size_t bytes = c.mib << 20;
  std::printf("migration_bench: %zu MiB, %d runs per figure (medians), store under %s\n", c.mib,
              c.runs, c.store_root.c_str());

  // Ceilings, measured now on the same machine state.
  auto* src = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* dst = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (src == MAP_FAILED || dst == MAP_FAILED) return std::perror("mmap"), 1;
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < bytes / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(src + i * 8, &x, 8);
  }
  std::memset(dst, 1, bytes);
  std::vector<double> tcp, fresh, fresh_huge, store;
  for (int r = 0; r < c.runs; ++r) {
    tcp.push_back(TcpCopyRate(src, bytes, dst));
    fresh.push_back(FreshMemoryRate(src, bytes, false));
    fresh_huge.push_back(FreshMemoryRate(src, bytes, true));
    store.push_back(StoreWriteRate(src, bytes, c.store_root));
  }
  munmap(src, bytes);
  munmap(dst, bytes);
  const double t = Median(tcp), f = Median(fresh), fh = Median(fresh_huge), st = Median(store);
  const double ceiling = std::min(t, f);
  std::printf(
      "ceiling: loopback TCP copy %.0f MB/s; writing into fresh memory %.0f MB/s (%.0f "
      "with THP); writing into the store directory %.0f MB/s (page cache)\n",
      t / 1e6, f / 1e6, fh / 1e6, st / 1e6);
  std::printf(
      "ceiling: %.0f MB/s, bound by %s (the receiver's premapped memory; the store write "
      "happens after the stream)\n",
      ceiling / 1e6, t <= f ? "the TCP copy" : "page faults in fresh memory");

  const std::vector<Scenario> scenarios = {
      {"random-1ch", "random", 0, {"--channels", "1"}},
      {"random-2ch", "random", 0, {"--channels", "2"}},
      {"zero", "zero", 0, {}},
      {"dirty-32", "random", 32, {}},
      {"dirty-32-xbzrle", "random", 32, {"--xbzrle"}},
  };
  std::string missing;
  for (const char* cmd : {"run", "migrate", "receive"}) {
    if (!HasCommand(c, cmd)) missing += std::string(missing.empty() ? "" : ", ") + "procmig " + cmd;
  }
  for (const Scenario& s : scenarios) {
    if (!c.only.empty() && ("," + c.only + ",").find("," + s.name + ",") == std::string::npos) {
      continue;
    }
    if (!missing.empty()) {
      std::printf("%-16s not run: %s not built yet (%s)\n", s.name.c_str(), missing.c_str(),
                  c.procmig.c_str());
      continue;
    }
    RunScenario(c, s, ceiling, t);
  }
  std::printf(
      "not run: the 100 MB/s netem link with compression on/off (this kernel has no "
      "sch_netem; tests/e2e shapes a veth with tbf instead)\n");
  return 0;
}

}  // namespace
}  // namespace procmig::bench

int main(int argc, char** argv) { return procmig::bench::Main(argc, argv); }
