// RestorePlan: the geometry and the argument block the blob executes, checked op by op.
#include "restore/restore_plan.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>

#include "doctest/doctest.h"
#include "restore/restorer_abi.h"
#include "restore/restorer_blob.h"

namespace procmig {
namespace {

namespace abi = restore_abi;

MemoryRegion Cur(uint64_t s, uint64_t e, const char* path, bool r = true, bool x = false) {
  MemoryRegion m;
  m.start = s;
  m.end = e;
  m.readable = r;
  m.executable = x;
  m.path = path;
  m.kind = path[0] == '[' ? RegionKind::kSpecial : RegionKind::kAnonymous;
  return m;
}

VmaRecord Vma(uint64_t s, uint64_t e, uint8_t prot, VmaKind kind, const char* path = "") {
  VmaRecord v;
  v.start = s;
  v.end = e;
  v.prot = prot;
  v.kind = kind;
  v.path = path;
  return v;
}

// The old layout: a file text segment, an anonymous block, the vDSO trio, the [stack].
struct Fixture {
  ProcessStateRecord st;
  std::vector<MemoryRegion> cur;
  std::vector<PlacedBlock> blocks;
  int stdio_fds[3] = {-1, -1, -1};  // redirected stdio (receive/restore --stdin/--stdout/--stderr)
  std::vector<std::pair<int, int>> rebuilt_fds;  // own pipes rebuilt by the caller
  Fixture() {
    st.pid = 100;
    st.cwd = "/work";
    st.exe = "/bin/prog";
    st.vmas.push_back(Vma(0x400000, 0x401000, PROT_READ | PROT_EXEC, VmaKind::kFile, "/bin/prog"));
    st.vmas.back().offset = 0x1000;
    st.vmas.push_back(
        Vma(0x7f0000000000, 0x7f0000004000, PROT_READ | PROT_WRITE, VmaKind::kAnonymous));
    st.vmas.push_back(Vma(0x7f1000000000, 0x7f1000004000, PROT_READ, VmaKind::kSpecial, "[vvar]"));
    st.vmas.push_back(
        Vma(0x7f1000004000, 0x7f1000006000, PROT_READ | PROT_EXEC, VmaKind::kSpecial, "[vdso]"));
    st.vmas.push_back(
        Vma(0x7ffd00000000, 0x7ffd00002000, PROT_READ | PROT_WRITE, VmaKind::kStack, "[stack]"));
    ThreadContext main;
    main.tid = 100;
    main.rip = 0x400100;
    main.rsp = 0x7ffd00001000;
    ThreadContext other = main;
    other.tid = 101;
    st.threads = {other, main};  // main second: the plan must put it first
    cur.push_back(Cur(0x555500000000, 0x555500010000, "/usr/bin/procmig", true, true));
    cur.push_back(Cur(0x7e0000000000, 0x7e0000004000, "[vvar]"));
    cur.push_back(Cur(0x7e0000004000, 0x7e0000006000, "[vdso]", true, true));
    blocks.push_back({1, 0x7f0000000000, 0x4000, 0x600000000000});
    blocks.push_back({2, 0x7ffd00000000, 0x2000, 0x600000100000});
  }
  absl::StatusOr<RestorePlan> Plan(int report_fd = 64,
                                   std::span<const PremappedFile> premapped = {}) {
    RestorePlanInput in;
    in.state = &st;
    in.blocks = blocks;
    in.current = cur;
    in.premapped = premapped;
    in.code_bytes = 5000;
    in.report_fd = report_fd;
    for (int i = 0; i < 3; ++i) in.stdio_fds[i] = stdio_fds[i];
    in.rebuilt_fds = rebuilt_fds;
    return BuildRestorePlan(in);
  }
};

const abi::Args& ArgsOf(const RestorePlan& p) {
  return *reinterpret_cast<const abi::Args*>(p.args.data());
}
std::vector<abi::Op> OpsOf(const RestorePlan& p) {
  const abi::Args& a = ArgsOf(p);
  const auto* ops = reinterpret_cast<const abi::Op*>(p.args.data() + a.ops);
  return {ops, ops + a.nops};
}
std::string StrAt(const RestorePlan& p, uint64_t off) {
  return reinterpret_cast<const char*>(p.args.data() + off);
}

TEST_CASE("the ops rebuild the layout in order: vDSO via staging, moves, file maps, stack copy") {
  Fixture f;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  const abi::Args& a = ArgsOf(*plan);
  CHECK(a.magic == abi::kArgsMagic);
  CHECK(a.size == plan->args.size());
  std::vector<abi::Op> ops = OpsOf(*plan);
  // Nothing of ours sits in the old layout, so only the vDSO pair is staged.
  REQUIRE(ops.size() == 4 + 1 + 1 + 2);
  // 1-2: our [vvar],[vdso] to staging, keeping their distance; 3-4: to the old addresses.
  CHECK(ops[0].kind == abi::kOpMove);
  CHECK(ops[0].src == 0x7e0000000000);
  CHECK(ops[1].src == 0x7e0000004000);
  CHECK(ops[1].dst - ops[0].dst == 0x4000);
  CHECK(ops[2].src == ops[0].dst);
  CHECK(ops[2].dst == 0x7f1000000000);
  CHECK(ops[2].len == 0x4000);
  CHECK(ops[3].dst == 0x7f1000004000);
  CHECK(ops[3].prot == (PROT_READ | PROT_EXEC));
  for (int i = 0; i < 4; ++i) CHECK(ops[i].flags == abi::kMoveKeepsProt);
  // The text segment, from its file.
  CHECK(ops[4].kind == abi::kOpMapFile);
  CHECK(ops[4].dst == 0x400000);
  CHECK(ops[4].len == 0x1000);
  CHECK(ops[4].offset == 0x1000);
  CHECK(ops[4].flags == MAP_PRIVATE);
  CHECK(ops[4].open_flags == O_RDONLY);
  CHECK(ops[4].prot == (PROT_READ | PROT_EXEC));
  CHECK(StrAt(*plan, ops[4].path) == "/bin/prog");
  // The anonymous block, moved whole.
  CHECK(ops[5].kind == abi::kOpMove);
  CHECK(ops[5].src == 0x600000000000);
  CHECK(ops[5].dst == 0x7f0000000000);
  CHECK(ops[5].len == 0x4000);
  CHECK(ops[5].prot == (PROT_READ | PROT_WRITE));
  CHECK(ops[5].flags == abi::kMoveKeepsProt);  // read-write already: no mprotect
  // The [stack]: mapped growing down, then the block copied in.
  CHECK(ops[6].kind == abi::kOpMapAnon);
  CHECK((ops[6].flags & MAP_GROWSDOWN) != 0);
  CHECK(ops[6].dst == 0x7ffd00000000);
  CHECK(ops[7].kind == abi::kOpCopy);
  CHECK(ops[7].src == 0x600000100000);
  CHECK(ops[7].dst == 0x7ffd00000000);
  CHECK(ops[7].len == 0x2000);
}

TEST_CASE("a [stack] block whose mapping grows down is moved into place, not copied") {
  Fixture f;
  f.blocks[1].grows_down = true;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  std::vector<abi::Op> ops = OpsOf(*plan);
  REQUIRE(ops.size() == 4 + 1 + 1 + 1);
  CHECK(ops[6].kind == abi::kOpMove);
  CHECK(ops[6].src == 0x600000100000);
  CHECK(ops[6].dst == 0x7ffd00000000);
  CHECK(ops[6].len == 0x2000);
  CHECK(ops[6].flags == abi::kMoveKeepsProt);
  // Only part of the [stack] received: mapped growing down and copied in, as before.
  Fixture g;
  g.blocks[1].grows_down = true;
  g.blocks[1].length = 0x1000;
  g.blocks[1].start = 0x7ffd00001000;
  plan = g.Plan();
  REQUIRE(plan.ok());
  ops = OpsOf(*plan);
  REQUIRE(ops.size() == 4 + 1 + 1 + 2);
  CHECK(ops[6].kind == abi::kOpMapAnon);
  CHECK((ops[6].flags & MAP_GROWSDOWN) != 0);
  CHECK(ops[7].kind == abi::kOpCopy);
  CHECK(ops[7].dst == 0x7ffd00001000);
}

TEST_CASE("the blob's region and staging lie outside both layouts; keep ranges are ours") {
  Fixture f;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  auto clear = [&](uint64_t s, uint64_t e) {
    for (const VmaRecord& v : f.st.vmas) {
      if (s < v.end && v.start < e) return false;
    }
    for (const MemoryRegion& m : f.cur) {
      if (s < m.end && m.start < e) return false;
    }
    return true;
  };
  CHECK(clear(plan->region_start, plan->region_start + plan->region_bytes));
  std::vector<abi::Op> ops = OpsOf(*plan);
  CHECK(clear(ops[0].dst, ops[1].dst + ops[1].len));
  const abi::Args& a = ArgsOf(*plan);
  const auto* keep = reinterpret_cast<const abi::Range*>(plan->args.data() + a.keep);
  // Sorted: the two blocks (adjacent ones would merge), the blob, our vvar+vdso (merged).
  REQUIRE(a.nkeep == 4);
  CHECK(keep[0].start == 0x600000000000);
  CHECK(keep[0].end == 0x600000004000);
  CHECK(keep[1].start == 0x600000100000);
  CHECK(keep[2].start == 0x7e0000000000);
  CHECK(keep[2].end == 0x7e0000006000);
  CHECK(keep[3].start == plan->region_start);
  for (uint32_t i = 1; i < a.nkeep; ++i) CHECK(keep[i - 1].end < keep[i].start);
}

TEST_CASE("a block whose temporary range is in the old layout's way is staged first") {
  Fixture f;
  f.blocks[0].temp = 0x400000 - 0x1000;  // overlaps the text segment's page
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  std::vector<abi::Op> ops = OpsOf(*plan);
  REQUIRE(ops.size() == 1 + 4 + 1 + 1 + 2);
  CHECK(ops[0].kind == abi::kOpMove);
  CHECK(ops[0].src == 0x3ff000);
  const uint64_t staged = ops[0].dst;
  CHECK(staged >= plan->region_start + plan->region_bytes);
  CHECK(ops[6].kind == abi::kOpMove);
  CHECK(ops[6].src == staged);
  CHECK(ops[6].dst == 0x7f0000000000);
}

TEST_CASE("a block already at its final address stays put; a [stack] there is still copied") {
  Fixture f;
  f.blocks[0].temp = f.blocks[0].start;  // the anonymous VMA's block, in place
  f.blocks[1].temp = f.blocks[1].start;  // the [stack]'s block, in place: in its own way
  SUBCASE("read-write, as received: no op at all") {
    auto plan = f.Plan();
    REQUIRE(plan.ok());
    std::vector<abi::Op> ops = OpsOf(*plan);
    REQUIRE(ops.size() == 1 + 4 + 1 + 2);
    // The stack's block goes to staging first (its VMA is mapped anew over it).
    CHECK(ops[0].kind == abi::kOpMove);
    CHECK(ops[0].src == 0x7ffd00000000);
    CHECK(ops[0].flags == abi::kMoveKeepsProt);
    CHECK(ops[5].kind == abi::kOpMapFile);
    CHECK(ops[6].kind == abi::kOpMapAnon);
    CHECK(ops[7].kind == abi::kOpCopy);
    CHECK(ops[7].src == ops[0].dst);
    CHECK(ops[7].dst == 0x7ffd00000000);
  }
  SUBCASE("another protection: only that is set") {
    f.st.vmas[1].prot = PROT_READ;
    auto plan = f.Plan();
    REQUIRE(plan.ok());
    std::vector<abi::Op> ops = OpsOf(*plan);
    REQUIRE(ops.size() == 1 + 4 + 1 + 1 + 2);
    CHECK(ops[6].kind == abi::kOpProtect);
    CHECK(ops[6].dst == 0x7f0000000000);
    CHECK(ops[6].len == 0x4000);
    CHECK(ops[6].prot == PROT_READ);
  }
}

TEST_CASE("threads: the main thread first, every context kept, stacks inside the region") {
  Fixture f;
  f.st.threads[0].fs_base = 0x7f00000010f0;
  f.st.threads[0].rseq_area = 0x7f0000001000;
  f.st.threads[0].rseq_size = 20;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nthreads == 2);
  const auto* t = reinterpret_cast<const abi::Thread*>(plan->args.data() + a.threads);
  CHECK(t[0].tid == 100);
  CHECK(t[1].tid == 101);
  CHECK(t[1].fs_base == 0x7f00000010f0);
  CHECK(t[1].rseq_size == 32);  // the kernel's minimum registration
  CHECK(t[0].rseq_size == 0);
  CHECK(t[0].stack_top == plan->main_stack_top);
  for (int i = 0; i < 2; ++i) {
    CHECK(t[i].stack_top % 16 == 0);
    CHECK(t[i].stack_top > plan->region_start);
    CHECK(t[i].stack_top <= plan->region_start + plan->region_bytes);
  }
  CHECK(t[1].stack_top - t[0].stack_top == kBlobStackBytes);
  CHECK((a.flags & abi::kArgSetTid) != 0);
}

TEST_CASE("descriptors: regular files reopened, others reported, the report fd above them") {
  Fixture f;
  FdRecord file;
  file.fd = 7;
  file.kind = FdKind::kRegular;
  file.flags = O_WRONLY | O_APPEND;
  file.offset = 1234;
  file.path = "/tmp/out.txt";
  FdRecord sock;
  sock.fd = 5;
  sock.kind = FdKind::kSocket;
  sock.path = "socket:[1]";
  FdRecord tty;
  tty.fd = 1;
  tty.kind = FdKind::kTty;
  tty.path = "/dev/pts/0";
  f.st.fds = {tty, sock, file};
  CHECK(MaxRestoredFd(f.st) == 7);
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 1);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  CHECK(fd[0].fd == 7);
  CHECK(fd[0].offset == 1234);
  CHECK(fd[0].open_flags == static_cast<uint32_t>(O_WRONLY | O_APPEND));
  CHECK(StrAt(*plan, fd[0].path) == "/tmp/out.txt");
  REQUIRE(plan->notes.size() == 1);
  CHECK(plan->notes[0].find("fd 5 (socket") == 0);
  CHECK(StrAt(*plan, a.cwd) == "/work");
  CHECK(StrAt(*plan, a.exe_path) == "/bin/prog");
  CHECK(std::string(a.comm) == "prog");
  CHECK(DescribeRestoreItem(*plan, abi::kStepFiles, 0) == "descriptor 0 (fd 7 /tmp/out.txt)");
  CHECK(DescribeRestoreItem(*plan, abi::kStepMemory, 4) ==
        "op 4 (map file 400000-401000 /bin/prog)");
  CHECK(DescribeRestoreItem(*plan, abi::kStepThreads, 1) == "thread 1 (tid 101)");
  CHECK(!f.Plan(7).ok());  // the report fd must be above fd 7
  // The process's own /proc entries follow it.
  f.st.fds[2].path = "/proc/100/pagemap";
  auto again = f.Plan();
  REQUIRE(again.ok());
  const abi::Args& b = ArgsOf(*again);
  const auto* fd2 = reinterpret_cast<const abi::Fd*>(again->args.data() + b.fds);
  CHECK(StrAt(*again, fd2[0].path) == "/proc/self/pagemap");
}

TEST_CASE("descriptors: stateless devices are reopened by path, other devices reported") {
  Fixture f;
  FdRecord null;  // a daemon's /dev/null, a library's /dev/urandom
  null.fd = 4;
  null.kind = FdKind::kOther;
  null.mode = S_IFCHR | 0666;
  null.flags = O_RDWR | O_CLOEXEC;
  null.path = "/dev/null";
  FdRecord random = null;
  random.fd = 6;
  random.flags = O_RDONLY;
  random.path = "/dev/urandom";
  FdRecord disk = null;  // a device with state of its own: not reopened
  disk.fd = 8;
  disk.mode = S_IFBLK | 0660;
  disk.path = "/dev/null";
  FdRecord fuse = null;
  fuse.fd = 9;
  fuse.path = "/dev/fuse";
  f.st.fds = {null, random, disk, fuse};
  auto plan = f.Plan();
  REQUIRE_MESSAGE(plan.ok(), plan.status().ToString());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 2);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  CHECK((fd[0].fd == 4 && fd[0].open_flags == static_cast<uint32_t>(O_RDWR | O_CLOEXEC)));
  CHECK(StrAt(*plan, fd[0].path) == "/dev/null");
  CHECK((fd[1].fd == 6 && fd[1].open_flags == static_cast<uint32_t>(O_RDONLY)));
  CHECK(StrAt(*plan, fd[1].path) == "/dev/urandom");
  REQUIRE(plan->notes.size() == 2);
  CHECK(plan->notes[0].find("fd 8 (other /dev/null) is not restored") == 0);
  CHECK(plan->notes[1].find("fd 9 (other /dev/fuse) is not restored") == 0);
}

TEST_CASE("descriptors: redirected stdio replaces what the record has at 0/1/2, the rest as is") {
  Fixture f;
  FdRecord tty;  // fd 0: would be the receiver's own
  tty.fd = 0;
  tty.kind = FdKind::kTty;
  tty.path = "/dev/pts/0";
  FdRecord out;  // fd 1: would be reopened at its offset
  out.fd = 1;
  out.kind = FdKind::kRegular;
  out.flags = O_WRONLY | O_APPEND;
  out.offset = 500;
  out.path = "/tmp/out.log";
  FdRecord err = out;  // fd 2: not redirected, reopened as before
  err.fd = 2;
  err.flags = O_WRONLY;
  err.offset = 9;
  err.path = "/tmp/err.log";
  FdRecord data = out;
  data.fd = 7;
  data.flags = O_RDWR;
  data.offset = 4096;
  data.path = "/tmp/data";
  f.st.fds = {tty, out, err, data};

  auto plain = f.Plan();
  REQUIRE(plain.ok());
  const abi::Args& pa = ArgsOf(*plain);
  REQUIRE(pa.nfds == 3);  // 1, 2, 7: the tty is the receiver's own
  const auto* pfd = reinterpret_cast<const abi::Fd*>(plain->args.data() + pa.fds);
  CHECK(pfd[0].fd == 1);
  CHECK(pfd[0].from_fd == -1);
  CHECK(StrAt(*plain, pfd[0].path) == "/tmp/out.log");

  f.stdio_fds[0] = 10;
  f.stdio_fds[1] = 11;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 4);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  // The redirects first (the blob dup3s them before closing the receiver's descriptors).
  CHECK(fd[0].fd == 0);
  CHECK(fd[0].from_fd == 10);
  CHECK(fd[0].path == 0);
  CHECK(fd[1].fd == 1);
  CHECK(fd[1].from_fd == 11);
  CHECK(fd[1].path == 0);
  CHECK(fd[1].offset == 0);
  // fd 2 and fd 7 exactly as without redirects.
  CHECK(fd[2].fd == 2);
  CHECK(fd[2].from_fd == -1);
  CHECK(fd[2].open_flags == static_cast<uint32_t>(O_WRONLY));
  CHECK(fd[2].offset == 9);
  CHECK(StrAt(*plan, fd[2].path) == "/tmp/err.log");
  CHECK(fd[3].fd == 7);
  CHECK(fd[3].from_fd == -1);
  CHECK(fd[3].open_flags == static_cast<uint32_t>(O_RDWR));
  CHECK(fd[3].offset == 4096);
  CHECK(StrAt(*plan, fd[3].path) == "/tmp/data");
  CHECK(plan->max_fd == 7);
  CHECK(DescribeRestoreItem(*plan, abi::kStepFds, 1) ==
        "descriptor 1 (fd 1 from the receiver's fd 11)");
  CHECK(DescribeRestoreItem(*plan, abi::kStepFiles, 3) == "descriptor 3 (fd 7 /tmp/data)");

  // A redirect for a descriptor the source did not have open still gives the process that fd.
  f.st.fds = {data};
  f.stdio_fds[0] = -1;
  f.stdio_fds[1] = -1;
  f.stdio_fds[2] = 12;
  auto none = f.Plan();
  REQUIRE(none.ok());
  const abi::Args& n = ArgsOf(*none);
  REQUIRE(n.nfds == 2);
  const auto* nfd = reinterpret_cast<const abi::Fd*>(none->args.data() + n.fds);
  CHECK(nfd[0].fd == 2);
  CHECK(nfd[0].from_fd == 12);
  CHECK(nfd[1].fd == 7);
  CHECK(nfd[1].from_fd == -1);

  // The descriptor must survive the blob's close until it is dup'd, and not be stdio itself.
  f.stdio_fds[2] = 2;
  auto low = f.Plan();
  REQUIRE(!low.ok());
  CHECK(low.status().message() ==
        "restore plan: fd 2 redirected from descriptor 2, which must be above 2 and not the "
        "report descriptor 64");
  f.stdio_fds[2] = 64;
  CHECK(!f.Plan(64).ok());
}

TEST_CASE("descriptors: the process's own pipes come from the caller's rebuilt ends") {
  Fixture f;
  FdRecord r;  // a self-pipe at 4 (read) and 9 (write, close-on-exec)
  r.fd = 4;
  r.kind = FdKind::kPipe;
  r.flags = O_RDONLY;
  r.dev = 14;
  r.inode = 77;
  r.path = "pipe:[77]";
  r.pipe_size = 65536;
  FdRecord w = r;
  w.fd = 9;
  w.flags = O_WRONLY | O_CLOEXEC;
  FdRecord other = r;  // a pipe to another process: only its read end here
  other.fd = 5;
  other.inode = 78;
  other.path = "pipe:[78]";
  FdRecord file;
  file.fd = 6;
  file.kind = FdKind::kRegular;
  file.flags = O_RDONLY;
  file.path = "/tmp/in";
  f.st.fds = {r, other, file, w};
  f.stdio_fds[0] = 20;
  f.rebuilt_fds = {{9, 31}, {4, 30}};
  auto plan = f.Plan();
  REQUIRE_MESSAGE(plan.ok(), plan.status().ToString());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 4);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  // The stdio redirect first, then in record order: the pipe's ends (dup3'd from ours, only
  // O_CLOEXEC kept) and the file; the other process's pipe is left out, with a note.
  CHECK(fd[0].fd == 0);
  CHECK(fd[0].from_fd == 20);
  CHECK(fd[1].fd == 4);
  CHECK(fd[1].from_fd == 30);
  CHECK(fd[1].open_flags == 0);
  CHECK(fd[1].path == 0);
  CHECK(fd[2].fd == 6);
  CHECK(fd[2].from_fd == -1);
  CHECK(fd[3].fd == 9);
  CHECK(fd[3].from_fd == 31);
  CHECK(fd[3].open_flags == static_cast<uint32_t>(O_CLOEXEC));
  CHECK(plan->max_fd == 9);
  CHECK(DescribeRestoreItem(*plan, abi::kStepFds, 1) ==
        "descriptor 1 (fd 4 (the process's own pipe:[77]))");
  bool noted = false;
  for (const std::string& n : plan->notes) noted |= n == "fd 5 (pipe pipe:[78]) is not restored";
  CHECK(noted);

  // Our descriptors must lie above every restored one (the blob dups them in place) and not be
  // the report descriptor; a missing one leaves the pipe out, noted.
  f.rebuilt_fds = {{4, 9}, {9, 31}};
  auto low = f.Plan();
  REQUIRE_FALSE(low.ok());
  CHECK(low.status().message() ==
        "restore plan: fd 4 comes from descriptor 9, which must be above every restored "
        "descriptor and not the report descriptor");
  f.rebuilt_fds = {{4, 64}, {9, 31}};
  CHECK_FALSE(f.Plan(64).ok());
  f.rebuilt_fds = {{9, 31}};
  auto half = f.Plan();
  REQUIRE(half.ok());
  CHECK(ArgsOf(*half).nfds == 3);
}

TEST_CASE("descriptors: a dup shares the description the blob reopened, unless that was replaced") {
  Fixture f;
  FdRecord out;  // `cmd >/tmp/both.log 2>&1`: fd 2 shares fd 1's description; fd 9 another dup
  out.fd = 1;
  out.kind = FdKind::kRegular;
  out.flags = O_WRONLY;
  out.offset = 700;
  out.inode = 5;
  out.path = "/tmp/both.log";
  FdRecord err = out;
  err.fd = 2;
  err.dup_of = 1;
  FdRecord late = out;
  late.fd = 9;
  late.flags = O_WRONLY | O_CLOEXEC;
  late.dup_of = 1;
  f.st.fds = {out, err, late};
  auto plan = f.Plan();
  REQUIRE_MESSAGE(plan.ok(), plan.status().ToString());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 3);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  CHECK((fd[0].fd == 1 && fd[0].same_as == -1 && fd[0].offset == 700));
  CHECK(StrAt(*plan, fd[0].path) == "/tmp/both.log");
  CHECK((fd[1].fd == 2 && fd[1].same_as == 1 && fd[1].path == 0 && fd[1].from_fd == -1));
  CHECK((fd[2].fd == 9 && fd[2].same_as == 1 && fd[2].open_flags == (O_WRONLY | O_CLOEXEC)));
  CHECK(DescribeRestoreItem(*plan, abi::kStepFiles, 1) ==
        "descriptor 1 (fd 2 sharing fd 1's file)");

  // fd 1 redirected by the receiver's options: fd 2 is the file again, reopened on its own.
  f.stdio_fds[1] = 10;
  auto redirected = f.Plan();
  REQUIRE(redirected.ok());
  const abi::Args& r = ArgsOf(*redirected);
  REQUIRE(r.nfds == 3);
  const auto* rfd = reinterpret_cast<const abi::Fd*>(redirected->args.data() + r.fds);
  CHECK((rfd[0].fd == 1 && rfd[0].from_fd == 10));
  CHECK((rfd[1].fd == 2 && rfd[1].same_as == -1 && rfd[1].offset == 700));
  CHECK(StrAt(*redirected, rfd[1].path) == "/tmp/both.log");
  CHECK((rfd[2].fd == 9 && rfd[2].same_as == -1));  // its first is gone: reopened alone too
}

TEST_CASE("descriptors: eventfds and epoll instances rebuilt; epoll items for restored fds only") {
  Fixture f;
  FdRecord pr;  // a self-pipe at 4 (read) and 5 (write)
  pr.fd = 4;
  pr.kind = FdKind::kPipe;
  pr.flags = O_RDONLY;
  pr.inode = 77;
  pr.path = "pipe:[77]";
  FdRecord pw = pr;
  pw.fd = 5;
  pw.flags = O_WRONLY;
  FdRecord lone = pr;  // another process's pipe: not restored
  lone.fd = 6;
  lone.inode = 78;
  lone.path = "pipe:[78]";
  FdRecord ev;
  ev.fd = 10;
  ev.kind = FdKind::kEventfd;
  ev.path = "anon_inode:[eventfd]";
  ev.eventfd_count = 3;
  FdRecord ep;
  ep.fd = 11;
  ep.kind = FdKind::kEpoll;
  ep.flags = O_RDWR | O_CLOEXEC;
  ep.path = "anon_inode:[eventpoll]";
  ep.epoll_items = {
      {4, 0x80000019u, 0xab, 77}, {6, 0x19, 0x66, 78}, {10, 0x19, 0xcd, 18}, {1, 0x4, 0x1, 9}};
  FdRecord ep_dup = ep;  // dup(11): the same instance, given nothing by the caller
  ep_dup.fd = 12;
  ep_dup.dup_of = 11;
  f.st.fds = {pr, pw, lone, ev, ep, ep_dup};
  f.rebuilt_fds = {{4, 20}, {5, 21}, {10, 22}, {11, 23}};
  auto plan = f.Plan();
  REQUIRE_MESSAGE(plan.ok(), plan.status().ToString());
  const abi::Args& a = ArgsOf(*plan);
  REQUIRE(a.nfds == 5);
  const auto* fd = reinterpret_cast<const abi::Fd*>(plan->args.data() + a.fds);
  CHECK(fd[2].fd == 10);
  CHECK(fd[2].from_fd == 22);
  CHECK(fd[3].fd == 11);
  CHECK(fd[3].from_fd == 23);
  CHECK(fd[3].open_flags == static_cast<uint32_t>(O_CLOEXEC));
  CHECK((fd[4].fd == 12 && fd[4].same_as == 11 && fd[4].from_fd == -1));
  // Items in record order, the one for fd 6 (not restored) dropped; fd 1 is stdio, always there;
  // the dup's (the same instance's) not again.
  REQUIRE(a.nepoll_items == 3);
  const auto* it = reinterpret_cast<const abi::EpollItem*>(plan->args.data() + a.epoll_items);
  CHECK((it[0].epfd == 11 && it[0].tfd == 4 && it[0].events == 0x80000019u && it[0].data == 0xab));
  CHECK((it[1].epfd == 11 && it[1].tfd == 10 && it[1].events == 0x19u && it[1].data == 0xcd));
  CHECK((it[2].epfd == 11 && it[2].tfd == 1 && it[2].events == 0x4u && it[2].data == 0x1));
  CHECK(DescribeRestoreItem(*plan, abi::kStepEpoll, 1) ==
        "epoll item 1 (epoll fd 11 watching fd 10)");
  CHECK(std::string(RestoreStepName(abi::kStepEpoll)) == "epoll_ctl");
  bool noted = false;
  for (const std::string& n : plan->notes) {
    noted |= n == "epoll fd 11 watched fd 6, which is not restored: dropped from it";
  }
  CHECK(noted);
}

TEST_CASE("sigactions: one entry per signal, a bit per restored one") {
  Fixture f;
  f.st.sigactions = {{10, 0x04000004, 0x401000, 0x402000, 1ull << 3},
                     {64, 0x04000000, 0x401100, 0x402000, 0}};
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  const abi::Args& a = ArgsOf(*plan);
  CHECK(a.sigaction_set == ((1ull << 9) | (1ull << 63)));
  const auto* sa = reinterpret_cast<const abi::Sigaction*>(plan->args.data() + a.sigactions);
  CHECK(sa[9].handler == 0x401000);
  CHECK(sa[9].flags == 0x04000004);
  CHECK(sa[9].restorer == 0x402000);
  CHECK(sa[9].mask == (1ull << 3));
  CHECK(sa[63].handler == 0x401100);
}

TEST_CASE("a file VMA with a block: file map, block copied in (the file stays named), its prot") {
  Fixture f;
  f.st.vmas[0].end = 0x403000;
  f.st.vmas[0].prot = PROT_READ;
  f.blocks.push_back({3, 0x401000, 0x1000, 0x600000200000});
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  std::vector<abi::Op> ops = OpsOf(*plan);
  REQUIRE(ops.size() > 6);
  CHECK(ops[4].kind == abi::kOpMapFile);
  CHECK(ops[4].dst == 0x400000);
  CHECK(ops[4].len == 0x3000);
  CHECK(ops[4].prot == (PROT_READ | PROT_WRITE));
  CHECK(ops[5].kind == abi::kOpCopy);
  CHECK(ops[5].src == 0x600000200000);
  CHECK(ops[5].dst == 0x401000);
  CHECK(ops[5].len == 0x1000);
  CHECK(ops[6].kind == abi::kOpProtect);
  CHECK(ops[6].dst == 0x400000);
  CHECK(ops[6].len == 0x3000);
  CHECK(ops[6].prot == PROT_READ);
}

TEST_CASE("a file VMA's block received at its final place is staged first (the file maps there)") {
  Fixture f;
  f.st.vmas[0].end = 0x402000;
  f.st.vmas[0].prot = PROT_READ | PROT_WRITE;
  f.blocks.push_back({3, 0x400000, 0x2000, 0x400000});
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  std::vector<abi::Op> ops = OpsOf(*plan);
  REQUIRE(ops.size() > 7);
  CHECK(ops[0].kind == abi::kOpMove);
  CHECK(ops[0].src == 0x400000);
  CHECK(ops[0].flags == abi::kMoveKeepsProt);
  const uint64_t staged = ops[0].dst;
  CHECK(staged >= plan->region_start + plan->region_bytes);
  size_t i = 0;
  while (i < ops.size() && ops[i].kind != abi::kOpMapFile) ++i;
  REQUIRE(i + 1 < ops.size());
  CHECK(ops[i].dst == 0x400000);
  CHECK(ops[i + 1].kind == abi::kOpCopy);
  CHECK(ops[i + 1].src == staged);
  CHECK(ops[i + 1].dst == 0x400000);
  CHECK(ops[i + 1].len == 0x2000);
  // Read-write already: no protect op after the copy.
  CHECK((i + 2 == ops.size() || ops[i + 2].dst != 0x400000));
}

TEST_CASE("a premapped file mapping is kept as it is; a stale premap is left to the great unmap") {
  Fixture f;
  f.st.vmas[0].end = 0x402000;  // /bin/prog r-x at offset 0x1000
  // A written private file mapping (RELRO): r--, one block to copy in.
  f.st.vmas.push_back(Vma(0x402000, 0x403000, PROT_READ, VmaKind::kFile, "/bin/prog"));
  f.st.vmas.back().offset = 0x3000;
  f.blocks.push_back({3, 0x402000, 0x1000, 0x600000200000});
  std::vector<PremappedFile> pre = {
      {0x400000, 0x402000, 0x1000, PROT_READ | PROT_EXEC, false, "/bin/prog"},
      {0x402000, 0x403000, 0x3000, PROT_READ, false, "/bin/prog"},
      // Stale: the layout changed since (another offset): not kept, mapped anew.
      {0x500000, 0x501000, 0x0, PROT_READ, false, "/bin/other"}};
  f.st.vmas.push_back(Vma(0x500000, 0x501000, PROT_READ, VmaKind::kFile, "/bin/other"));
  f.st.vmas.back().offset = 0x1000;
  for (const PremappedFile& p : pre) f.cur.push_back(Cur(p.start, p.end, p.path.c_str()));
  auto plan = f.Plan(64, pre);
  REQUIRE(plan.ok());
  std::vector<abi::Op> ops = OpsOf(*plan);
  std::vector<abi::Op> at_prog, at_other;
  for (const abi::Op& op : ops) {
    if (op.dst >= 0x400000 && op.dst < 0x403000) at_prog.push_back(op);
    if (op.dst >= 0x500000 && op.dst < 0x501000) at_other.push_back(op);
  }
  // Text: nothing. RELRO: writable, the block copied in, read-only again.
  REQUIRE(at_prog.size() == 3);
  CHECK(at_prog[0].kind == abi::kOpProtect);
  CHECK(at_prog[0].dst == 0x402000);
  CHECK(at_prog[0].prot == (PROT_READ | PROT_WRITE));
  CHECK(at_prog[1].kind == abi::kOpCopy);
  CHECK(at_prog[1].src == 0x600000200000);
  CHECK(at_prog[1].dst == 0x402000);
  CHECK(at_prog[2].kind == abi::kOpProtect);
  CHECK(at_prog[2].prot == PROT_READ);
  REQUIRE(at_other.size() == 1);
  CHECK(at_other[0].kind == abi::kOpMapFile);
  CHECK(at_other[0].offset == 0x1000);
  // Kept: the two matching premaps; not the stale one.
  const abi::Args& a = ArgsOf(*plan);
  const auto* keep = reinterpret_cast<const abi::Range*>(plan->args.data() + a.keep);
  bool prog_kept = false, other_kept = false;
  for (uint32_t k = 0; k < a.nkeep; ++k) {
    prog_kept |= keep[k].start <= 0x400000 && keep[k].end >= 0x403000;
    other_kept |= keep[k].start < 0x501000 && keep[k].end > 0x500000;
  }
  CHECK(prog_kept);
  CHECK_FALSE(other_kept);
}

TEST_CASE("a block mirrored into a kept premap costs no op; into a premap not kept, it is copied") {
  Fixture f;
  f.st.vmas[0].end = 0x402000;
  // Two written private file mappings (RELRO r--, .data rw-), each one block, both mirrored.
  f.st.vmas.push_back(Vma(0x402000, 0x403000, PROT_READ, VmaKind::kFile, "/bin/prog"));
  f.st.vmas.back().offset = 0x3000;
  f.st.vmas.push_back(Vma(0x403000, 0x404000, PROT_READ | PROT_WRITE, VmaKind::kFile, "/bin/prog"));
  f.st.vmas.back().offset = 0x4000;
  f.blocks.push_back({3, 0x402000, 0x1000, 0x600000200000, /*mirrored=*/true});
  f.blocks.push_back({4, 0x403000, 0x1000, 0x600000300000, /*mirrored=*/true});
  // The RELRO premap is kept; the .data one is not among the premaps (stale, or never made).
  std::vector<PremappedFile> pre = {
      {0x400000, 0x402000, 0x1000, PROT_READ | PROT_EXEC, false, "/bin/prog"},
      {0x402000, 0x403000, 0x3000, PROT_READ, false, "/bin/prog"}};
  for (const PremappedFile& p : pre) f.cur.push_back(Cur(p.start, p.end, p.path.c_str()));
  auto plan = f.Plan(64, pre);
  REQUIRE(plan.ok());
  std::vector<abi::Op> at_relro, at_data;
  for (const abi::Op& op : OpsOf(*plan)) {
    if (op.src == 0x600000200000 || (op.dst >= 0x402000 && op.dst < 0x403000)) {
      at_relro.push_back(op);
    }
    if (op.src == 0x600000300000 || (op.dst >= 0x403000 && op.dst < 0x404000)) {
      at_data.push_back(op);
    }
  }
  CHECK(at_relro.empty());  // neither made writable, nor copied, nor protected again
  // .data: mapped from its file, the block copied in from its temporary copy.
  REQUIRE(at_data.size() == 2);
  CHECK(at_data[0].kind == abi::kOpMapFile);
  CHECK(at_data[0].offset == 0x4000);
  CHECK(at_data[1].kind == abi::kOpCopy);
  CHECK(at_data[1].src == 0x600000300000);
  CHECK(at_data[1].dst == 0x403000);
  // Kept: the RELRO premap, and the .data block's temporary copy (the copy needs it); not the
  // RELRO block's temporary copy, which nothing reads.
  const abi::Args& a = ArgsOf(*plan);
  const auto* keep = reinterpret_cast<const abi::Range*>(plan->args.data() + a.keep);
  auto kept = [&](uint64_t s, uint64_t e) {
    for (uint32_t k = 0; k < a.nkeep; ++k) {
      if (keep[k].start <= s && keep[k].end >= e) return true;
    }
    return false;
  };
  CHECK(kept(0x402000, 0x403000));
  CHECK(kept(0x600000300000, 0x600000301000));
  CHECK_FALSE(kept(0x600000200000, 0x600000201000));
}

TEST_CASE("segments of one file share one path string (the blob opens the file once)") {
  Fixture f;
  f.st.vmas.push_back(Vma(0x401000, 0x402000, PROT_READ, VmaKind::kFile, "/bin/prog"));
  f.st.vmas.back().offset = 0x2000;
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  std::vector<uint64_t> paths;
  for (const abi::Op& op : OpsOf(*plan)) {
    if (op.kind == abi::kOpMapFile) paths.push_back(op.path);
  }
  REQUIRE(paths.size() == 2);
  CHECK(paths[0] == paths[1]);
}

TEST_CASE("refusals name what cannot be placed") {
  SUBCASE("a different vDSO") {
    Fixture f;
    f.cur[2].end += 0x1000;
    auto plan = f.Plan();
    REQUIRE(!plan.ok());
    CHECK(plan.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(plan.status().message()).find("vDSO layout differs") != std::string::npos);
  }
  SUBCASE("a block outside every VMA") {
    Fixture f;
    f.blocks.push_back({9, 0x500000, 0x1000, 0x600000300000});
    auto plan = f.Plan();
    REQUIRE(!plan.ok());
    CHECK(std::string(plan.status().message()).find("block 9") != std::string::npos);
  }
  SUBCASE("overlapping VMAs") {
    Fixture f;
    f.st.vmas.push_back(Vma(0x400800, 0x402000, PROT_READ, VmaKind::kAnonymous));
    CHECK(f.Plan().status().code() == absl::StatusCode::kInvalidArgument);
  }
  SUBCASE("no main thread") {
    Fixture f;
    f.st.threads.pop_back();
    auto plan = f.Plan();
    REQUIRE(!plan.ok());
    CHECK(std::string(plan.status().message()).find("main thread") != std::string::npos);
  }
  SUBCASE("a deleted file with no block") {
    Fixture f;
    f.st.vmas[0].deleted = true;
    auto plan = f.Plan();
    REQUIRE(!plan.ok());
    CHECK(std::string(plan.status().message()).find("deleted") != std::string::npos);
  }
}

TEST_CASE("shared anonymous memory is recreated shared and empty, not from /dev/zero") {
  Fixture f;
  VmaRecord v =
      Vma(0x7f2000000000, 0x7f2000001000, PROT_READ | PROT_WRITE, VmaKind::kFile, "/dev/zero");
  v.deleted = true;
  v.shared = true;
  f.st.vmas.push_back(v);
  auto plan = f.Plan();
  REQUIRE(plan.ok());
  bool found = false;
  for (const abi::Op& op : OpsOf(*plan)) {
    if (op.dst == 0x7f2000000000) {
      found = true;
      CHECK(op.kind == abi::kOpMapAnon);
      CHECK((op.flags & MAP_SHARED) != 0);
    }
  }
  CHECK(found);
}

TEST_CASE("the blob is in its own section and has an entry point") {
  CHECK(restore_blob::Code().size() > 256);
  CHECK(restore_blob::EntryOffset() < restore_blob::Code().size());
}

}  // namespace
}  // namespace procmig
