// migration_bench: the migration figures, measured by driving the real binaries
// (`procmig receive --once --store`, `procmig run -- mem_workload`, `procmig migrate --json`),
// next to the ceilings measured in the same run (ceiling.h). Prints figures, medians of --runs
// runs; never pass/fail. A scenario whose pieces are missing prints what it could not run and why.
//
//   migration_bench [--mib 1024] [--runs 3] [--store-root DIR] [--only NAME,...]
//
// Scenarios: random-1ch, random-2ch (random content, 1 or 2 channels), zero (touched zero pages),
// dirty-32 and dirty-32-xbzrle (a writer dirtying random pages at 32 MB/s, XBZRLE off/on), all
// over loopback; netem-dirty-32, netem-dirty-32-zlib and netem-dirty-32-zlib-always (the same
// writer on compressible content: zlib off, on where it does not keep the link waiting, on for
// every page) to a receiver in a network namespace the bench creates, over a veth pair shaped
// to 100 MB/s (netns_link.h; as root with `ip` and `tc`, else reported as not run);
// live-random-1ch, live-random-2ch and live-zero: the first three, to a live receiver (`receive
// --once --detach`) that restores the process into fresh memory, judged against that ceiling.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ceiling.h"
#include "child_process.h"
#include "netns_link.h"

namespace procmig::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Scenario {
  std::string name;
  std::string fill;  // mem_workload's --fill: "random", "zero" or "compressible"
  int dirty_mbps;
  std::vector<std::string> migrate_opts;
  bool over_link = false;  // to a receiver across the shaped NetnsLink, not loopback
  // To a live receiver (`receive --once --detach`, no --store), which restores the process: the
  // destination is fresh memory, and the restored copy is killed after the run.
  bool live = false;
};

// Where the receiver runs: the address it listens on (and migrate sends to), the argv prefix
// that starts it there, and the link whose signal cleanup should kill it (null on loopback).
struct ReceiverSite {
  std::string host = "127.0.0.1";
  std::vector<std::string> prefix;
  NetnsLink* link = nullptr;
};

// The netem scenarios' link: 800 mbit/s is the 100 MB/s.
constexpr char kLinkRate[] = "800mbit";

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

// A port for the run's receiver: derived from the bench's pid and the run, and skipped while
// something on this host listens there (a run once failed with EADDRINUSE while another bench
// shared the machine). The receiver in a namespace has ports of its own; the check is harmless.
std::string FreeishPort(int salt) {
  int port = 20000 + (getpid() * 7 + salt * 13) % 30000;
  for (int tries = 0; tries < 50; ++tries, port = 20000 + (port - 20000 + 97) % 30000) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (free) break;
  }
  return std::to_string(port);
}

// The process a live receiver restored and left running (its output says "(host pid N, ..."),
// killed and waited for until it is gone (up to 10 s), so the next run does not share the machine
// with the teardown of its memory.
void KillRestored(const std::string& log) {
  FILE* f = std::fopen(log.c_str(), "r");
  if (f == nullptr) return;
  char line[512];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    const char* at = std::strstr(line, "(host pid ");
    if (at == nullptr) continue;
    const long pid = std::strtol(at + 10, nullptr, 10);
    if (pid <= 1 || kill(static_cast<pid_t>(pid), SIGKILL) != 0) continue;
    // Not our child: gone when kill(0) says so (a zombie of its init still answers; /proc/PID/
    // stat's state then reads Z, and its memory is already freed).
    for (int i = 0; i < 1000 && kill(static_cast<pid_t>(pid), 0) == 0; ++i) {
      char stat_path[64];
      std::snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
      FILE* st = std::fopen(stat_path, "r");
      char state = '?';
      if (st != nullptr) {
        if (std::fscanf(st, "%*d (%*[^)]) %c", &state) != 1) state = '?';
        std::fclose(st);
      }
      if (st == nullptr || state == 'Z' || state == 'X') break;
      usleep(10000);
    }
  }
  std::fclose(f);
}

// One migration; false with `why` when it did not complete. Figures into `stats`.
bool RunOnce(const Config& c, const Scenario& s, const ReceiverSite& site, int run,
             std::map<std::string, double>* stats, double* wall_s, std::string* why) {
  const std::string dir = c.store_root + "/procmig-bench-" + std::to_string(getpid()) + "-" +
                          s.name + "-" + std::to_string(run);
  const std::string log = dir + ".log";
  // The receiver's standard output (what it restored, "(host pid N, ..."), apart from the log:
  // the log is every child's stderr.
  const std::string received = dir + ".receive";
  const std::string agent_log = dir + ".agent.log";  // not in dir: a store target must be empty
  const std::string port = FreeishPort(run + static_cast<int>(s.name.size()) * 31);
  RunQuiet({"/bin/mkdir", "-p", dir}, 10000);
  ChildProcess receiver, workload, migrate;
  std::string err, line;
  std::vector<std::string> recv_argv = site.prefix;
  recv_argv.insert(recv_argv.end(),
                   {c.procmig, "receive", "--listen", site.host + ":" + port, "--once"});
  if (s.live) {
    recv_argv.push_back("--detach");
  } else {
    recv_argv.insert(recv_argv.end(), {"--store", dir});
  }
  bool ok = receiver.Start(recv_argv, {}, log, &err, received);
  // A signal's namespace cleanup kills the receiver in it; it must not outlive this run's one.
  struct ResidentGuard {
    NetnsLink* link;
    ~ResidentGuard() {
      if (link != nullptr) link->SetResident(0);
    }
  } resident{ok ? site.link : nullptr};
  if (resident.link != nullptr) resident.link->SetResident(receiver.pid());
  const std::string ctl = dir + ".ctl";
  const std::string out = dir + ".out";
  ok = ok && workload.Start({c.procmig, "run", "--", c.workload, "--mib", std::to_string(c.mib),
                             "--fill", s.fill, "--dirty-mbps", std::to_string(s.dirty_mbps)},
                            {"PROCMIG_CONTROL=" + ctl, "PROCMIG_LOG=" + agent_log}, log, &err, out);
  const bool ready = ok && WaitForLineInFile(out, "READY", 120000);
  if (!ok || !ready) {
    *why = ok ? "workload never printed READY (see " + log + ")" : err;
    return false;
  }
  for (int i = 0; i < 100 && access(ctl.c_str(), F_OK) != 0; ++i) usleep(50000);
  usleep(300000);  // the receiver is listening by now; let the writer reach its rate
  std::vector<std::string> argv = {
      c.procmig, "migrate", std::to_string(workload.pid()), "--to", site.host + ":" + port,
      "--json"};
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
  const bool receiver_ok = receiver.Wait(60000, &rcode) && rcode == 0;
  if (s.live) KillRestored(received);
  RunQuiet({"/bin/rm", "-rf", dir, ctl, out, received, agent_log}, 60000);
  if (code != 0 || phase != "done" || !receiver_ok) {
    *why = "migrate exit " + std::to_string(code) + ", last phase '" + phase + "', receiver " +
           (receiver_ok ? "ok" : "failed") + " (see " + log + ")";
    return false;
  }
  unlink(log.c_str());
  return true;
}

// The loopback ceilings measured again just before each run: on a shared VM the TCP copy has
// been seen at 573 and 1465 MB/s on the same day, and the host's disk flush varies as much, so a
// run is judged against the ceilings of its own moment (the ratios' medians are printed).
struct PairedCeilings {
  const uint8_t* src = nullptr;
  uint8_t* dst = nullptr;
  size_t bytes = 0;
  std::string dir;
};

// This process's CPU seconds (all threads, user and system) so far.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// A ceiling measurement's rate (bytes/s) and the CPU it took, as cores kept busy on average over
// its timed interval. The CPU includes the measurement's setup and teardown outside that interval
// (sockets, threads, the pipeline's munmap of 1 GiB of huge pages: 3 ms of some 430), under 1%.
struct Measured {
  double rate = 0;
  double cores = 0;
};
template <typename F>
Measured WithCores(size_t bytes, F measure) {
  const double cpu0 = ProcessCpuSeconds();
  Measured m;
  m.rate = measure();
  const double cpu = ProcessCpuSeconds() - cpu0;
  if (m.rate > 0) m.cores = cpu / (static_cast<double>(bytes) / m.rate);
  return m;
}

// The scenario's --channels (1 when it does not say).
int Channels(const Scenario& s) {
  for (size_t i = 0; i + 1 < s.migrate_opts.size(); ++i) {
    if (s.migrate_opts[i] == "--channels") return std::stoi(s.migrate_opts[i + 1]);
  }
  return 1;
}

void RunScenario(const Config& c, const Scenario& s, const ReceiverSite& site, double ceiling,
                 double tcp, const PairedCeilings* paired = nullptr) {
  std::map<std::string, std::vector<double>> series;
  std::vector<double> walls, to_ceiling, to_tcp, run_tcp, run_store, to_floor, run_floor;
  std::vector<double> tcp_cores, floor_cores, floor_to_tcp;
  const double mem = static_cast<double>(c.mib << 20);
  std::string why;
  for (int r = 0; r < c.runs; ++r) {
    // Without paired ceilings (the shaped link) every run has the ones given.
    double ceil_r = ceiling, t_r = tcp, st_r = 0, fl_r = 0;
    if (paired != nullptr) {
      const Measured tcp_m = WithCores(
          paired->bytes, [&] { return TcpCopyRate(paired->src, paired->bytes, paired->dst); });
      t_r = tcp_m.rate;
      // A live receiver writes into fresh memory, huge pages where the block allows (it asks).
      // Measured twice, the faster kept: on this VM memory the guest freed a while ago was given
      // back to the host (free page reporting) and the first touch pays the host's fault, so a
      // first copy measured 431-2977 MB/s in one bench run while the receiver right after it,
      // handed the pages that copy had just warmed, wrote 2391 MB/s. The second copy sees what
      // the receiver will: the stricter ceiling.
      st_r = s.live ? std::max(FreshMemoryRate(paired->src, paired->bytes, /*huge=*/true),
                               FreshMemoryRate(paired->src, paired->bytes, /*huge=*/true))
                    : DurableStoreRate(paired->src, paired->bytes, paired->dir);
      ceil_r = std::min(t_r, st_r);
      // Live random content: the bare pipeline on as many streams (the faster of two, for the
      // same reason as the fresh memory above), with the CPU it took: a run of procmig does at
      // least that work, plus its staging copy, on the same cores.
      if (s.live && s.fill == "random") {
        const int n = Channels(s);
        auto floor = [&] {
          return WithCores(paired->bytes,
                           [&] { return PipelineFloorRate(paired->src, paired->bytes, n); });
        };
        const Measured a = floor(), b = floor();
        const Measured& f = a.rate >= b.rate ? a : b;
        fl_r = f.rate;
        if (fl_r > 0 && t_r > 0) {
          tcp_cores.push_back(tcp_m.cores);
          floor_cores.push_back(f.cores);
          floor_to_tcp.push_back(fl_r / t_r);
        }
      }
    }
    std::map<std::string, double> st;
    double wall = 0;
    if (!RunOnce(c, s, site, r, &st, &wall, &why)) {
      std::printf("%-20s run %d did not complete: %s\n", s.name.c_str(), r + 1, why.c_str());
      continue;
    }
    for (const auto& [k, v] : st) series[k].push_back(v);
    walls.push_back(wall);
    const double rate_r = st["total_ms"] > 0 ? mem / (st["total_ms"] / 1000) : 0;
    to_ceiling.push_back(ceil_r > 0 ? rate_r / ceil_r : 0);
    to_tcp.push_back(t_r > 0 ? rate_r / t_r : 0);
    if (fl_r > 0) {
      run_floor.push_back(fl_r);
      to_floor.push_back(rate_r / fl_r);
    }
    run_tcp.push_back(t_r);
    run_store.push_back(st_r);
  }
  if (walls.empty()) return;
  auto med = [&](const char* k) { return Median(series[k]); };
  const double total_s = med("total_ms") / 1000;
  const double rate = total_s > 0 ? mem / total_s : 0;
  std::printf(
      "%-20s runs %zu  total %.2f s (wall %.2f s)  memory rate %.0f MB/s = %.2f of %s ceiling, "
      "%.2fx %s TCP stream (medians of the per-run ratios)\n",
      s.name.c_str(), walls.size(), total_s, Median(walls), rate / 1e6, Median(to_ceiling),
      paired != nullptr ? "its run's" : "the", Median(to_tcp),
      paired != nullptr ? "its run's" : "one");
  if (paired != nullptr) {
    std::string ratios;
    for (size_t i = 0; i < to_ceiling.size(); ++i) {
      char one[96];
      std::snprintf(one, sizeof one, "%s%.2f (TCP %.0f, %s %.0f)", i ? ", " : "", to_ceiling[i],
                    run_tcp[i] / 1e6, s.live ? "fresh memory" : "store", run_store[i] / 1e6);
      ratios += one;
    }
    std::printf("%-20s per run: %s MB/s\n", "", ratios.c_str());
  }
  if (!to_floor.empty()) {
    std::string floors;
    for (size_t i = 0; i < to_floor.size(); ++i) {
      char one[64];
      std::snprintf(one, sizeof one, "%s%.2f (%.0f MB/s)", i ? ", " : "", to_floor[i],
                    run_floor[i] / 1e6);
      floors += one;
    }
    std::printf(
        "%-20s %.2f of the bare pipeline (%d TCP stream(s) into fresh memory, crc32c per page on "
        "both sides): %s\n",
        "", Median(to_floor), Channels(s), floors.c_str());
    if (!floor_to_tcp.empty()) {
      std::printf(
          "%-20s the bare pipeline itself: %.2f of its run's TCP stream, keeping %.2f cores busy "
          "(the TCP stream %.2f; this machine has %ld)\n",
          "", Median(floor_to_tcp), Median(floor_cores), Median(tcp_cores),
          sysconf(_SC_NPROCESSORS_ONLN));
    }
  }
  std::printf(
      "%-20s on the wire %.1f MiB (%.3f%% of memory)  iterations %.0f  throttle %.0f%%  "
      "pause %.0f ms to end of stream (expected %.0f) + ack wait %.0f ms  setup %.0f ms\n",
      "", med("transferred_bytes") / 1048576, 100 * med("transferred_bytes") / mem,
      med("iteration"), med("throttle_percent"), med("downtime_ms"), med("expected_downtime_ms"),
      med("ack_wait_ms"), med("setup_ms"));
  std::printf(
      "%-20s pages normal %.0f zero %.0f xbzrle %.0f (%.1f MiB, cache misses %.0f, "
      "overflows %.0f)  dirty rate %.0f pages/s\n",
      "", med("normal_pages"), med("zero_pages"), med("xbzrle_pages"),
      med("xbzrle_bytes") / 1048576, med("xbzrle_cache_misses"), med("xbzrle_overflows"),
      med("dirty_pages_rate"));
  if (med("compressed_pages") > 0 || med("compress_skipped_pages") > 0) {
    const double zin = med("compressed_pages") * static_cast<double>(sysconf(_SC_PAGESIZE));
    std::printf(
        "%-20s zlib pages %.0f: %.1f MiB of pages as %.1f MiB (%.2fx); %.0f pages sent raw "
        "rather than keep the link waiting\n",
        "", med("compressed_pages"), zin / 1048576, med("compressed_bytes") / 1048576,
        med("compressed_bytes") > 0 ? zin / med("compressed_bytes") : 0,
        med("compress_skipped_pages"));
  }
  if (s.dirty_mbps > 0) {
    std::printf(
        "%-20s %s (max iterations 30 by default)\n", "",
        med("iteration") < 30 ? "converged before the iteration limit" : "hit the iteration limit");
  }
}

// Builds the shaped link and measures one TCP stream through it (`runs` copies of 64 MiB,
// median into `rate`, 0 if every copy failed); prints what it built. Null with `why`.
std::unique_ptr<NetnsLink> OpenLink(const Config& c, double* rate, std::string* why) {
  std::unique_ptr<NetnsLink> link = NetnsLink::Create(kLinkRate, why);
  if (link == nullptr) return nullptr;
  constexpr size_t kCopy = 64 << 20;
  std::vector<uint8_t> buf(kCopy);
  uint64_t x = 2463534242ull;
  for (size_t i = 0; i < kCopy / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(buf.data() + i * 8, &x, 8);
  }
  std::vector<double> rates;
  for (int r = 0; r < c.runs; ++r) {
    const double v = NetnsTcpCopyRate(link->netns_path(), link->there_addr(), buf.data(), kCopy);
    if (v > 0) rates.push_back(v);
  }
  *rate = Median(rates);
  std::printf("link: namespace %s, veth %s <-> %s, %s; one TCP stream through it ",
              link->name().c_str(), link->here_addr().c_str(), link->there_addr().c_str(),
              link->shaper().c_str());
  if (*rate > 0) {
    std::printf("%.0f MB/s (64 MiB, median of %zu)\n", *rate / 1e6, rates.size());
  } else {
    std::printf("not measured (every copy failed)\n");
  }
  return link;
}

int Main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // figures as they come, also into a file
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
  std::vector<double> tcp, fresh, fresh_huge, store, store_sync, store_direct;
  for (int r = 0; r < c.runs; ++r) {
    tcp.push_back(TcpCopyRate(src, bytes, dst));
    fresh.push_back(FreshMemoryRate(src, bytes, false));
    fresh_huge.push_back(FreshMemoryRate(src, bytes, true));
    store.push_back(StoreWriteRate(src, bytes, c.store_root, false));
    store_sync.push_back(StoreWriteRate(src, bytes, c.store_root, true));
    store_direct.push_back(StoreWriteRate(src, bytes, c.store_root, true, true));
  }
  // Kept for the ceilings measured again before each loopback run (PairedCeilings).
  const PairedCeilings paired{src, dst, bytes, c.store_root};
  const double t = Median(tcp), f = Median(fresh), fh = Median(fresh_huge), st = Median(store),
               sts = std::max(Median(store_sync), Median(store_direct));
  // These scenarios migrate to `receive --store`, whose destination is the store directory: the
  // pages are written into the image files as they arrive and synced before the ack. (The bench's
  // own writes reuse the page cache its previous runs freed; on a VM that returns free memory to
  // its host, the receiver's page cache is fresh memory, as costly to touch as the "fresh memory"
  // figure shows.)
  const double ceiling = std::min(t, sts);
  std::printf(
      "ceiling: loopback TCP copy %.0f MB/s; writing into the store directory %.0f MB/s with "
      "fsync (through the page cache %.0f, O_DIRECT %.0f; %.0f into the page cache alone); for a "
      "live restore: fresh memory %.0f MB/s (%.0f with THP)\n",
      t / 1e6, sts / 1e6, Median(store_sync) / 1e6, Median(store_direct) / 1e6, st / 1e6, f / 1e6,
      fh / 1e6);
  std::printf("ceiling: %.0f MB/s, bound by %s\n", ceiling / 1e6,
              t <= sts ? "the TCP copy" : "writing the image durably (write + fsync)");

  // The netem pair runs on compressible content (mem_workload --fill compressible, 2.6x under
  // zlib level 1), both of them, so that zlib off/on compares the same memory: random content
  // does not compress at all and zlib would only cost CPU. Level 1 because compression, not the
  // link, bounds the stream here: per 4 KiB page of this content, one core's zlib did level 1
  // 2.65x at 62 MB/s, level 3 2.56x at 46 MB/s, level 6 2.67x at 16 MB/s, level 9 at 3 MB/s;
  // two threads at level 1 (the default --compress-threads) could at best feed the 100 MB/s link
  // 124 MB/s of pages as 47 MB/s, and in the bench on the shared 2-core machine they managed
  // 32-34 MB/s of pages (two runs): the CPU bounds the stream, and a higher level gains at most
  // 1% of ratio at 4x the CPU.
  const std::vector<Scenario> scenarios = {
      {"random-1ch", "random", 0, {"--channels", "1"}},
      {"random-2ch", "random", 0, {"--channels", "2"}},
      {"zero", "zero", 0, {}},
      {"dirty-32", "random", 32, {}},
      {"dirty-32-xbzrle", "random", 32, {"--xbzrle"}},
      {"netem-dirty-32", "compressible", 32, {}, true},
      {"netem-dirty-32-zlib", "compressible", 32, {"--compress", "1"}, true},
      // Every page through zlib, as before compression yielded to the link (compress_adaptive).
      {"netem-dirty-32-zlib-always",
       "compressible",
       32,
       {"--compress", "1", "--compress-always"},
       true},
      // The same memory restored live: the destination is fresh memory, not the store.
      {"live-random-1ch", "random", 0, {"--channels", "1"}, false, true},
      {"live-random-2ch", "random", 0, {"--channels", "2"}, false, true},
      {"live-zero", "zero", 0, {}, false, true},
  };
  auto selected = [&](const Scenario& s) {
    return c.only.empty() || ("," + c.only + ",").find("," + s.name + ",") != std::string::npos;
  };
  std::string missing;
  for (const char* cmd : {"run", "migrate", "receive"}) {
    if (!HasCommand(c, cmd)) missing += std::string(missing.empty() ? "" : ", ") + "procmig " + cmd;
  }

  // The shaped link, built at the first scenario that uses it (so its TCP rate is measured
  // beside them) and removed on the way out.
  std::unique_ptr<NetnsLink> link;
  std::string link_why;
  double link_rate = 0;
  bool link_tried = false;
  for (const Scenario& s : scenarios) {
    if (!selected(s)) continue;
    if (!missing.empty()) {
      std::printf("%-20s not run: %s not built yet (%s)\n", s.name.c_str(), missing.c_str(),
                  c.procmig.c_str());
      continue;
    }
    if (!s.over_link) {
      RunScenario(c, s, ReceiverSite{}, ceiling, t, &paired);
      continue;
    }
    if (!link_tried) {
      link_tried = true;
      link = OpenLink(c, &link_rate, &link_why);
    }
    if (link == nullptr) {
      std::printf("%-20s not run: no %s link to a namespace: %s\n", s.name.c_str(), kLinkRate,
                  link_why.c_str());
      continue;
    }
    const ReceiverSite site{link->there_addr(), link->ExecPrefix(), link.get()};
    RunScenario(c, s, site, link_rate > 0 ? std::min(link_rate, f) : f, link_rate);
  }
  munmap(src, bytes);
  munmap(dst, bytes);
  return 0;
}

}  // namespace
}  // namespace procmig::bench

int main(int argc, char** argv) { return procmig::bench::Main(argc, argv); }
