// NetnsLink: a network namespace the migration bench creates for itself, joined to this one by a
// veth pair, 10.213.X.1 here <-> 10.213.X.2 there (a /30 of a 10.213.X.0/24 no interface here
// has yet, as tests/e2e/lib.sh make_netns picks it), both ends shaped to one rate: netem (the
// rate and a 1 ms delay) where the kernel has sch_netem, else a token bucket (tbf, rate only).
// Built and removed with the `ip` and `tc` commands; the bench only ever uses these two
// addresses. The destructor deletes the veth pair and the namespace; while a NetnsLink lives,
// SIGINT and SIGTERM do the same (and SIGKILL the registered resident, the receiver running in
// the namespace) before the bench dies of them. The bench thread owns it; one at a time.
#ifndef PROCMIG_BENCH_MIGRATION_NETNS_LINK_H_
#define PROCMIG_BENCH_MIGRATION_NETNS_LINK_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace procmig::bench {

class NetnsLink {
 public:
  // `rate` in tc's syntax ("800mbit" is 100 MB/s). nullptr with `why` set when it cannot be
  // built: not root, `ip` or `tc` missing, or the step that failed. Whatever was made is removed.
  static std::unique_ptr<NetnsLink> Create(const std::string& rate, std::string* why);
  ~NetnsLink();
  NetnsLink(const NetnsLink&) = delete;
  NetnsLink& operator=(const NetnsLink&) = delete;

  const std::string& name() const { return name_; }
  std::string netns_path() const { return "/run/netns/" + name_; }
  const std::string& here_addr() const { return here_; }
  const std::string& there_addr() const { return there_; }
  // How the link is shaped, e.g. "netem delay 1ms rate 800mbit".
  const std::string& shaper() const { return shaper_; }
  // The argv prefix that runs a program in the namespace: ip netns exec NAME.
  std::vector<std::string> ExecPrefix() const { return {ip_, "netns", "exec", name_}; }
  // The process a signal kills before the namespace goes (0: none).
  void SetResident(pid_t pid);

 private:
  NetnsLink() = default;
  void Remove();

  std::string ip_, tc_;
  std::string name_, veth_here_, here_, there_, shaper_;
  bool have_ns_ = false, have_veth_ = false;
};

}  // namespace procmig::bench

#endif  // PROCMIG_BENCH_MIGRATION_NETNS_LINK_H_
