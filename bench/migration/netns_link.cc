#include "netns_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "child_process.h"

namespace procmig::bench {
namespace {

// What the signal handler needs, written before it is armed. A global because a handler can
// reach nothing else; the bench holds one NetnsLink at a time (STYLE.md's no-globals rule is
// lib/'s).
struct SignalCleanup {
  char ip[256];
  char veth[32];
  char ns[64];
  volatile sig_atomic_t armed;
  volatile pid_t resident;
  struct sigaction old_int, old_term;
};
SignalCleanup g_cleanup;

// Async-signal-safe: fork, execve, waitpid.
void RunFromHandler(char* const argv[]) {
  const pid_t p = fork();
  if (p == 0) {
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 1);
      dup2(null, 2);
    }
    char* const envp[] = {nullptr};
    execve(argv[0], argv, envp);
    _exit(127);
  }
  if (p > 0) waitpid(p, nullptr, 0);
}

void OnSignal(int sig) {
  if (g_cleanup.armed) {
    g_cleanup.armed = 0;
    if (g_cleanup.resident > 0) kill(g_cleanup.resident, SIGKILL);
    char link[] = "link", netns[] = "netns", del[] = "del";
    char* const del_link[] = {g_cleanup.ip, link, del, g_cleanup.veth, nullptr};
    RunFromHandler(del_link);
    char* const del_ns[] = {g_cleanup.ip, netns, del, g_cleanup.ns, nullptr};
    RunFromHandler(del_ns);
  }
  signal(sig, SIG_DFL);
  raise(sig);  // delivered when the handler returns: the bench dies of the signal as before
}

// `name` in PATH or the sbin directories (a root shell's PATH may lack them).
std::string FindTool(const char* name) {
  std::string dirs = getenv("PATH") != nullptr ? getenv("PATH") : "";
  dirs += ":/usr/sbin:/sbin:/usr/bin:/bin";
  size_t at = 0;
  while (at <= dirs.size()) {
    size_t end = dirs.find(':', at);
    if (end == std::string::npos) end = dirs.size();
    const std::string path = dirs.substr(at, end - at) + "/" + name;
    if (end > at && access(path.c_str(), X_OK) == 0) return path;
    at = end + 1;
  }
  return "";
}

// Third octets X of every 10.213.X.Y address on an interface here.
std::set<int> UsedSubnets() {
  std::set<int> used;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return used;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const uint32_t a = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if ((a >> 16) == ((10u << 8) | 213u)) used.insert(static_cast<int>((a >> 8) & 0xff));
  }
  freeifaddrs(list);
  return used;
}

// Runs argv; false with `why` naming the command and its first line of stderr.
bool Step(const std::vector<std::string>& argv, std::string* why) {
  const std::string err = "/tmp/procmig-bench-netns-" + std::to_string(getpid()) + ".err";
  unlink(err.c_str());
  ChildProcess p;
  std::string error, line;
  bool ok = p.Start(argv, {}, err, &error);
  while (ok && p.ReadLine(&line, 30000)) {
  }
  int code = -1;
  ok = ok && p.Wait(30000, &code) && code == 0;
  if (!ok) {
    std::string cmd;
    for (size_t i = 0; i < argv.size(); ++i) {
      cmd += (i == 0 ? argv[i].substr(argv[i].rfind('/') + 1) : " " + argv[i]);
    }
    char text[300] = "";
    if (FILE* f = fopen(err.c_str(), "r")) {
      if (fgets(text, sizeof(text), f) == nullptr) text[0] = '\0';
      fclose(f);
    }
    text[strcspn(text, "\n")] = '\0';
    const std::string detail = text[0] != '\0' ? text : error;
    *why = "`" + cmd + "` failed" + (detail.empty() ? "" : ": " + detail);
  }
  unlink(err.c_str());
  return ok;
}

}  // namespace

std::unique_ptr<NetnsLink> NetnsLink::Create(const std::string& rate, std::string* why) {
  if (geteuid() != 0) return (*why = "not root (a namespace and tc need it)"), nullptr;
  std::unique_ptr<NetnsLink> l(new NetnsLink());
  l->ip_ = FindTool("ip");
  l->tc_ = FindTool("tc");
  if (l->ip_.empty() || l->tc_.empty()) {
    *why = std::string("no `") + (l->ip_.empty() ? "ip" : "tc") + "` command (iproute2)";
    return nullptr;
  }
  // A subnet no interface here has already (a namespace left by a killed run, an e2e test
  // running beside the bench): two routes to one /30 would send the connection elsewhere.
  const std::set<int> used = UsedSubnets();
  int x = getpid() * 7 % 250 + 1;
  for (int tries = 0; used.count(x) != 0; ++tries) {
    if (tries == 250) return (*why = "no free 10.213.X.0/24 subnet"), nullptr;
    x = x % 250 + 1;
  }
  const std::string pid = std::to_string(getpid());
  l->name_ = "pm-bench-" + pid;
  l->veth_here_ = "pmb" + pid + "a";
  const std::string veth_there = "pmb" + pid + "b";
  l->here_ = "10.213." + std::to_string(x) + ".1";
  l->there_ = "10.213." + std::to_string(x) + ".2";
  const std::string& ip = l->ip_;
  const std::string& tc = l->tc_;
  const std::string& ns = l->name_;
  if (!Step({ip, "netns", "add", ns}, why)) return nullptr;
  l->have_ns_ = true;
  if (!Step({ip, "link", "add", l->veth_here_, "type", "veth", "peer", "name", veth_there}, why)) {
    return nullptr;
  }
  l->have_veth_ = true;
  if (!Step({ip, "link", "set", veth_there, "netns", ns}, why) ||
      !Step({ip, "addr", "add", l->here_ + "/30", "dev", l->veth_here_}, why) ||
      !Step({ip, "link", "set", l->veth_here_, "up"}, why) ||
      !Step({ip, "-n", ns, "addr", "add", l->there_ + "/30", "dev", veth_there}, why) ||
      !Step({ip, "-n", ns, "link", "set", veth_there, "up"}, why) ||
      !Step({ip, "-n", ns, "link", "set", "lo", "up"}, why)) {
    return nullptr;
  }
  // Both directions, as tests/e2e do. netem where the kernel has it; else a token bucket whose
  // burst holds a whole 64 KiB GSO packet (tbf would split larger ones) and a few of them.
  std::string ignored;
  const std::vector<std::string> netem = {"netem", "delay", "1ms", "rate", rate};
  const std::vector<std::string> tbf = {"tbf", "rate", rate, "burst", "256kb", "latency", "20ms"};
  const std::vector<std::string>* shaper = &netem;
  auto add = [&](const std::vector<std::string>& pre, const std::string& dev,
                 const std::vector<std::string>& q, std::string* w) {
    std::vector<std::string> argv = pre;
    argv.insert(argv.end(), {"qdisc", "add", "dev", dev, "root"});
    argv.insert(argv.end(), q.begin(), q.end());
    return Step(argv, w);
  };
  if (add({tc}, l->veth_here_, netem, &ignored)) {
    l->shaper_ = "netem delay 1ms rate " + rate;
  } else {
    shaper = &tbf;
    if (!add({tc}, l->veth_here_, tbf, why)) return nullptr;
    l->shaper_ = "tbf rate " + rate + " burst 256kb (no sch_netem in this kernel: no delay)";
  }
  if (!add({tc, "-n", ns}, veth_there, *shaper, why)) return nullptr;

  std::snprintf(g_cleanup.ip, sizeof(g_cleanup.ip), "%s", ip.c_str());
  std::snprintf(g_cleanup.veth, sizeof(g_cleanup.veth), "%s", l->veth_here_.c_str());
  std::snprintf(g_cleanup.ns, sizeof(g_cleanup.ns), "%s", ns.c_str());
  g_cleanup.resident = 0;
  g_cleanup.armed = 1;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_cleanup.old_int);
  sigaction(SIGTERM, &sa, &g_cleanup.old_term);
  return l;
}

NetnsLink::~NetnsLink() {
  if (g_cleanup.armed) {
    g_cleanup.armed = 0;
    sigaction(SIGINT, &g_cleanup.old_int, nullptr);
    sigaction(SIGTERM, &g_cleanup.old_term, nullptr);
  }
  Remove();
}

void NetnsLink::SetResident(pid_t pid) { g_cleanup.resident = pid; }

void NetnsLink::Remove() {
  std::string ignored;
  // Deleting one end of a veth pair deletes both; the namespace goes with its last process.
  if (have_veth_) Step({ip_, "link", "del", veth_here_}, &ignored);
  if (have_ns_) Step({ip_, "netns", "del", name_}, &ignored);
  have_veth_ = have_ns_ = false;
}

}  // namespace procmig::bench
