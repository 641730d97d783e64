// procmig: the host-side command. See `procmig --help`.
#include <cstdio>
#include <string_view>
#include <vector>

#include "command.h"

namespace procmig::agent {
namespace {

constexpr std::string_view kOverview =
    "usage: procmig <command> [options]\n"
    "\n"
    "procmig moves a running Linux process's memory, live, to another host or to a checkpoint.\n"
    "\n"
    "commands:\n";

int Usage(FILE* out) {
  std::fputs(std::string(kOverview).c_str(), out);
  for (const Command& c : Commands()) {
    std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  }
  std::fputs("\nRun 'procmig <command> --help' for a command's options.\n", out);
  return out == stdout ? 0 : 2;
}

constexpr Command kCommands[] = {
    {"check", "show which kernel features and dirty-tracking backends work here, and why",
     "usage: procmig check [--json]\n"
     "\n"
     "Probes this kernel by behaviour (not by the presence of an interface) and prints every\n"
     "feature procmig may use and every dirty-tracking backend: available or not, and why.\n"
     "\n"
     "  --json   one JSON object instead of the table\n"
     "  --help   this text\n",
     RunCheckCommand},
    {"run", "start a program with the procmig agent preloaded",
     "usage: procmig run [--control PATH] [--log PATH] [--] PROG [ARGS...]\n"
     "\n"
     "Executes PROG in place of this process (same pid, same stdin/stdout/stderr) with\n"
     "libprocmig_preload.so prepended to LD_PRELOAD. The library is looked for in "
     "$PROCMIG_PRELOAD,\n"
     "next to procmig, then in ../preload/ and ../lib/ relative to it.\n"
     "\n"
     "  --control PATH  the agent's control socket (sets PROCMIG_CONTROL); by default\n"
     "                  $XDG_RUNTIME_DIR/procmig/PID.sock or /tmp/procmig-UID/PID.sock\n"
     "  --log PATH      the agent's log file (sets PROCMIG_LOG)\n"
     "  --help          this text\n",
     RunRunCommand},
    {"migrate", "migrate a running program's memory, live, to a receiver",
     "usage: procmig migrate PID --to HOST:PORT [options]\n"
     "\n"
     "Tells the agent inside PID (started with `procmig run`) to migrate to the receiver at\n"
     "HOST:PORT (or unix:/path), and follows it: on a terminal one redrawn line (phase, "
     "iteration,\n"
     "sent/remaining, rate, dirty rate, expected downtime); with --json or when stdout is not a\n"
     "terminal, one JSON stats object per line. Exits 0 when the receiver acked, 1 on error.\n"
     "\n"
     "  --to HOST:PORT          the receiver (`procmig receive`)\n"
     "  --max-bandwidth B       bytes/s (K, M, G suffixes); default unlimited\n"
     "  --downtime-limit MS     the pause to aim for; default 300\n"
     "  --max-iterations N      default 30\n"
     "  --ack-timeout MS        how long the paused program waits for the last pages to go and\n"
     "                          the receiver's ack before it runs on; default 60000\n"
     "  --xbzrle                send dirty pages as XBZRLE deltas where it pays\n"
     "  --xbzrle-cache BYTES    the sender's page cache for XBZRLE; default 64M\n"
     "  --compress LEVEL        zlib level 1..9; 0 (default) is off\n"
     "  --compress-threads N    default 2\n"
     "  --compress-always       compress every page; by default a page goes raw when the link\n"
     "                          would otherwise wait for the compressor\n"
     "  --channels N            parallel connections; default 1\n"
     "  --tracker NAME          auto, pagemap-scan, soft-dirty, uffd-wp, mprotect, full\n"
     "  --transport NAME        auto, io_uring, posix\n"
     "  --no-auto-converge      never throttle the program\n"
     "  --verify                in the final phase, read all memory again and fail (the\n"
     "                          program runs on) if a page is not what was sent of it\n"
     "  --control PATH          the agent's socket, if not at its usual place\n"
     "  --json                  one JSON object per line\n"
     "  --help                  this text\n",
     RunMigrateCommand},
    {"checkpoint", "snapshot a running program to a directory or a receiver",
     "usage: procmig checkpoint PID --to DIR|HOST:PORT [--leave-running] [migrate's options]\n"
     "\n"
     "Like migrate, but a consistent snapshot. With a DIR (anything that is not HOST:PORT or\n"
     "unix:/path) procmig receives the stream itself, on a private UNIX socket, and stores a\n"
     "verified image in DIR (which must be absent or empty); see `procmig inspect DIR`.\n"
     "\n"
     "  --leave-running   the program resumes right after its snapshot is taken\n"
     "  --help            this text\n",
     RunCheckpointCommand},
    {"receive", "receive migrations: restore them live, or store verified images",
     "usage: procmig receive --listen ADDR:PORT [--store DIR] [--once [--detach]] [options]\n"
     "\n"
     "Listens for senders and checks every page's crc32c and each block's final content\n"
     "against the digest the sender sent. Without --store the process is restored live: its\n"
     "pages land in place while it is still running at the source, and at the end of the\n"
     "stream it is rebuilt and resumed here (see `procmig restore --help` for what is\n"
     "restored); the ack, after which the source exits, is sent once every thread runs.\n"
     "With --once it then waits for the restored program and exits with its status (128+N\n"
     "when killed by signal N), passing on the signals it is sent (as `procmig restore`\n"
     "does); with --detach it exits right after the ack.\n"
     "With --store DIR the image is stored, then acked, with a report per block; a failed\n"
     "session leaves no image. Without --once it serves one session after another (each in\n"
     "DIR/<session-id>/); with --once it stores the first session in DIR itself (absent or\n"
     "empty) and exits: 0 when stored, 1 on error. It prints 'listening on ADDR' first.\n"
     "\n"
     "  --listen ADDR:PORT  where to listen (port 0: any free port), or unix:/path\n"
     "  --store DIR         store images instead of restoring\n"
     "  --once              one session, then exit (see above)\n"
     "  --detach            with --once and no --store: exit once the process runs\n"
     "  --no-pid-ns         restore into this PID namespace with new ids (default: a new\n"
     "                      PID namespace where the process keeps its pid and tids)\n"
     "  --stdin PATH        live restore: the process's fd 0 is PATH (read-only), whatever\n"
     "                      it had there; opened before listening\n"
     "  --stdout PATH       the same for fd 1: PATH opened for appending (created 0644), so\n"
     "                      a restored log continues\n"
     "  --stderr PATH       the same for fd 2\n"
     "  --channels N        refuse senders that do not open exactly N channels\n"
     "  --transport NAME    auto, io_uring, posix\n"
     "  --no-sync           do not fsync the image before acking (faster, not crash-safe)\n"
     "  --no-populate       do not pre-fault memory for announced blocks\n"
     "  --help              this text\n",
     RunReceiveCommand},
    {"restore", "start a stored checkpoint image as a running process",
     "usage: procmig restore DIR [--detach] [--no-pid-ns] [--stdin PATH] [--stdout PATH]\n"
     "                           [--stderr PATH]\n"
     "\n"
     "Rebuilds the process stored in DIR (by `procmig receive --store` or `procmig checkpoint\n"
     "--to DIR`) and resumes every thread where it was parked. Memory, threads (TLS, signal\n"
     "masks, altstacks, rseq, robust lists), sigactions, mm fields, regular files (reopened at\n"
     "their offsets) and cwd are restored; stdio that was a terminal, pipe or socket is this\n"
     "command's own; --stdin/--stdout/--stderr replace fd 0/1/2, whatever they were.\n"
     "Refused up front, with every reason: CPU features the source had and this CPU lacks, a\n"
     "different vDSO (kernel), a mapped file that is missing or changed.\n"
     "The image is not consumed: every run makes another independent process.\n"
     "By default it waits for the process and exits with its status (128+N when killed by\n"
     "signal N), like `criu restore` without -d. Meanwhile SIGHUP, SIGINT, SIGQUIT, SIGUSR1,\n"
     "SIGUSR2, SIGALRM, SIGTERM and SIGWINCH sent to it with kill are passed on to the\n"
     "process (so `timeout` or a service manager stops the program, not just this command);\n"
     "a terminal's ^C reaches the process directly, as it runs in this command's group.\n"
     "\n"
     "  --detach      print the restored process's pid and return once it runs\n"
     "  --no-pid-ns   restore into this PID namespace with new ids (default: a new PID\n"
     "                namespace where the process keeps its old pid and tids)\n"
     "  --stdin PATH  the process's fd 0 is PATH (read-only), whatever the image has there\n"
     "  --stdout PATH its fd 1 is PATH, opened for appending (created 0644): a restored log\n"
     "                continues\n"
     "  --stderr PATH the same for fd 2\n"
     "  --help        this text\n",
     RunRestoreCommand},
    {"status", "show the migration figures of a program's agent",
     "usage: procmig status PID [--json] [--control PATH]\n"
     "\n"
     "Asks the agent inside PID for its current figures (phase, iteration, bytes, rates).\n"
     "\n"
     "  --json   one JSON object\n"
     "  --help   this text\n",
     RunStatusCommand},
    {"cancel", "cancel a program's running migration",
     "usage: procmig cancel PID [--control PATH]\n"
     "\n"
     "Asks the agent inside PID to abandon its migration; the program keeps running.\n"
     "\n"
     "  --help   this text\n",
     RunCancelCommand},
    {"inspect", "summarize a recorded stream FILE or a stored image DIR",
     "usage: procmig inspect FILE|DIR\n"
     "\n"
     "For a recorded stream FILE: decodes it and prints its preamble, blocks, pages per\n"
     "encoding, iterations and whether it ended cleanly. A corrupt stream exits 1 with the\n"
     "byte offset of the bad record and the check that failed.\n"
     "For a checkpoint image DIR: prints the session, blocks (range, protection, kind, pages\n"
     "stored, digest check) and checks every file against the manifest's sizes and crc32c;\n"
     "a mismatch exits 1 naming the file.\n"
     "\n"
     "  --help   this text\n",
     RunInspectCommand},
};

}  // namespace

std::span<const Command> Commands() { return kCommands; }

}  // namespace procmig::agent

int main(int argc, char** argv) {
  using procmig::agent::Commands;
  if (argc < 2) return procmig::agent::Usage(stderr);
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") return procmig::agent::Usage(stdout);
  std::vector<std::string_view> args(argv + 2, argv + argc);
  for (const auto& c : Commands()) {
    if (c.name != name) continue;
    for (std::string_view a : args) {
      if (a == "--help" || a == "-h") return procmig::agent::PrintHelp(c.usage);
      if (a == "--") break;
    }
    return c.run(args);
  }
  std::fprintf(stderr, "procmig: unknown command '%s' (see procmig --help)\n", argv[1]);
  return 2;
}
