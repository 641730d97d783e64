#include "migration/process_state.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>

#include "absl/strings/str_format.h"
#include "migration/process_capture.h"
#include "os/maps_parser.h"
#include "os/real_os.h"

namespace procmig {
namespace {

ProcessStateRecord Sample() {
  ProcessStateRecord r;
  r.pid = 1234;
  r.page_size = 4096;
  r.cwd = "/home/u";
  r.exe = "/usr/bin/prog";
  r.mm = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  r.cpu = {0x11, 0x22, 0x33, 0x44, 0x55, 0x7, 0x1234, 0x2};
  r.vdso = {0x7000, 0x9000, 0x5000, 0x7000, 0xdeadbeef};
  VmaRecord v;
  v.start = 0x1000;
  v.end = 0x3000;
  v.offset = 0x2000;
  v.inode = 99;
  v.file_size = 12345;
  v.mtime_ns = 777;
  v.dev_major = 8;
  v.dev_minor = 1;
  v.prot = PROT_READ | PROT_EXEC;
  v.kind = VmaKind::kFile;
  v.path = "/usr/lib/libc.so.6";
  v.id = {FileIdKind::kBuildId, std::string("\x3a\x4f\x00\x01", 4)};
  r.vmas.push_back(v);
  VmaRecord h;
  h.start = 0x10000;
  h.end = 0x20000;
  h.prot = PROT_READ | PROT_WRITE;
  h.kind = VmaKind::kHeap;
  h.block_id = 3;
  h.path = "[heap]";
  r.vmas.push_back(h);
  ThreadContext t;
  t.tid = 1234;
  t.rbx = 1, t.rbp = 2, t.r12 = 3, t.r13 = 4, t.r14 = 5, t.r15 = 6, t.rsp = 7, t.rip = 8;
  t.fs_base = 9, t.tid_address = 10, t.robust_list = 11, t.robust_list_len = 24;
  t.rseq_area = 13, t.rseq_size = 32, t.sigmask = 0xff, t.altstack_sp = 14, t.altstack_size = 15;
  t.altstack_flags = 2, t.ucontext = 16, t.siginfo = 17, t.park_time_ns = 18;
  r.threads.push_back(t);
  r.sigactions.push_back({2, 0x04000000, 0x401000, 0x402000, 0x10});
  FdRecord f;
  f.fd = 3;
  f.kind = FdKind::kRegular;
  f.flags = 02;
  f.mode = 0100644;
  f.offset = 42;
  f.dev = 2049;
  f.inode = 7;
  f.path = "/tmp/x";
  r.fds.push_back(f);
  FdRecord pr;  // a self-pipe: read end with two unread bytes and a NUL, write end
  pr.fd = 5;
  pr.kind = FdKind::kPipe;
  pr.flags = O_RDONLY;
  pr.mode = 010600;
  pr.dev = 14;
  pr.inode = 77;
  pr.path = "pipe:[77]";
  pr.pipe_size = 65536;
  pr.unread = std::string("a\0b", 3);
  r.fds.push_back(pr);
  FdRecord pw = pr;
  pw.fd = 6;
  pw.flags = O_WRONLY | O_NONBLOCK;
  pw.unread.clear();
  r.fds.push_back(pw);
  FdRecord s0;  // a socketpair held whole, three bytes queued for s0
  s0.fd = 12;
  s0.kind = FdKind::kSocket;
  s0.flags = O_RDWR;
  s0.inode = 500;
  s0.path = "socket:[500]";
  s0.socket_peer = 501;
  s0.unread = "abc";
  FdRecord s1 = s0;
  s1.fd = 13;
  s1.inode = 501;
  s1.path = "socket:[501]";
  s1.socket_peer = 500;
  s1.unread.clear();
  r.fds.push_back(s0);
  r.fds.push_back(s1);
  FdRecord ev;  // an eventfd past 32 bits, semaphore
  ev.fd = 7;
  ev.kind = FdKind::kEventfd;
  ev.flags = O_RDWR | O_NONBLOCK;
  ev.path = "anon_inode:[eventfd]";
  ev.eventfd_count = 0x100000005ull;
  ev.eventfd_semaphore = true;
  r.fds.push_back(ev);
  FdRecord ep;  // an epoll instance watching the pipe's read end and the eventfd
  ep.fd = 8;
  ep.kind = FdKind::kEpoll;
  ep.flags = O_RDWR;
  ep.path = "anon_inode:[eventpoll]";
  ep.epoll_items = {{5, 0x80000019u, 0xabcdef0123456789ull, 77}, {7, 0x19, 7, 18}};
  r.fds.push_back(ep);
  FdRecord dup = f;  // fd 20 shares fd 3's open file description (`cmd >/tmp/x 2>&1`)
  dup.fd = 20;
  dup.dup_of = 3;
  r.fds.push_back(dup);
  r.digests.push_back({3, 0x10000, 0xabcdef01});
  return r;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// This process's record, as the agent captures it before a park.
ProcessStateRecord CaptureSelf() {
  RealOs os;
  auto regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());
  ProcessStateRecord r;
  REQUIRE(CaptureProcessBasics(*regions, {}, &r).ok());
  return r;
}

// The record of descriptor `fd` (a test failure when it was not captured).
FdRecord& RecordOf(ProcessStateRecord& r, int fd) {
  for (FdRecord& f : r.fds) {
    if (static_cast<int>(f.fd) == fd) return f;
  }
  FAIL("fd ", fd, " not captured");
  return r.fds[0];
}

TEST_CASE("round trip of every field, with the exact size, and the header bytes") {
  ProcessStateRecord r = Sample();
  std::string out;
  REQUIRE(EncodeProcessState(r, &out).ok());
  CHECK(out.size() == EncodedSize(r));
  // magic "PMPS" then version 4 and reserved 0, little-endian.
  CHECK(out.substr(0, 8) == std::string("PMPS\x04\x00\x00\x00", 8));
  // The dup's record ends with socket_peer 0 and dup_of 3; the others' with dup_of -1.
  CHECK(out.find(std::string(8, '\0') + std::string("\x03\x00\x00\x00", 4)) != std::string::npos);
  // The pipe's read end ends with its path, pipe_size 65536 and its 3 unread bytes.
  CHECK(out.find(std::string("pipe:[77]\x00\x00\x01\x00\x03\x00\x00\x00"
                             "a\0b",
                             20)) != std::string::npos);
  // The first vma ends with its path, then id_kind 2, id_len 4 and the build-id bytes.
  const std::string tail = std::string("/usr/lib/libc.so.6\x02\x04\x3a\x4f\x00\x01", 24);
  CHECK(out.find(tail) != std::string::npos);
  absl::StatusOr<ProcessStateRecord> back = DecodeProcessState(Bytes(out));
  REQUIRE(back.ok());
  CHECK(*back == r);
}

TEST_CASE("an empty record round-trips") {
  ProcessStateRecord r;
  std::string out;
  REQUIRE(EncodeProcessState(r, &out).ok());
  auto back = DecodeProcessState(Bytes(out));
  REQUIRE(back.ok());
  CHECK(*back == r);
}

TEST_CASE("every truncation and trailing bytes are DataLoss") {
  std::string out;
  REQUIRE(EncodeProcessState(Sample(), &out).ok());
  for (size_t n = 0; n < out.size(); ++n) {
    auto r = DecodeProcessState({reinterpret_cast<const uint8_t*>(out.data()), n});
    CHECK_MESSAGE(absl::IsDataLoss(r.status()), "length ", n);
  }
  std::string longer = out + "x";
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(longer)).status()));
}

TEST_CASE("unknown version, bad magic, bad enums and lying counts are refused") {
  std::string out;
  REQUIRE(EncodeProcessState(Sample(), &out).ok());
  std::string v1 = out;  // version 1 (no file identities) is not read any more
  v1[4] = 1;
  auto r = DecodeProcessState(Bytes(v1));
  CHECK(absl::IsDataLoss(r.status()));
  CHECK(r.status().message() == "decode process state: unknown version 1 (know 2 to 4)");
  std::string v5 = out;
  v5[4] = 5;
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(v5)).status()));
  std::string magic = out;
  magic[0] = 'X';
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(magic)).status()));
  std::string reserved = out;
  reserved[6] = 1;
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(reserved)).status()));
  // The vma count sits right after the fixed part: make it huge.
  ProcessStateRecord s = Sample();
  size_t vma_count_at = 8 + 8 + 4 + s.cwd.size() + 4 + s.exe.size() + 96 + 40 + 36;
  std::string lying = out;
  lying[vma_count_at + 3] = 0x7f;
  auto l = DecodeProcessState(Bytes(lying));
  CHECK(absl::IsDataLoss(l.status()));
  CHECK(l.status().message().find("vma count") != std::string::npos);
  // The first vma's kind byte: 6 u64 + 2 u32 + prot + shared = +58.
  std::string kind = out;
  kind[vma_count_at + 4 + 58] = 9;
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(kind)).status()));
}

TEST_CASE("versions 2 and 3 are still read; pipe fields on another kind are refused") {
  ProcessStateRecord r = Sample();
  r.fds.resize(1);  // the regular file only
  std::string v4;
  REQUIRE(EncodeProcessState(r, &v4).ok());
  // Version 3: the same record without the fd's dup_of (-1); version 2 also without its pipe,
  // eventfd, epoll and socket fields (32 zero bytes).
  const size_t after_path = v4.find("/tmp/x") + 6;
  REQUIRE(v4.substr(after_path, 36) == std::string(32, '\0') + "\xff\xff\xff\xff");
  std::string v3 = v4.substr(0, after_path + 32) + v4.substr(after_path + 36);
  v3[4] = 3;
  absl::StatusOr<ProcessStateRecord> back3 = DecodeProcessState(Bytes(v3));
  REQUIRE_MESSAGE(back3.ok(), back3.status().ToString());
  CHECK(*back3 == r);
  std::string v2 = v4.substr(0, after_path) + v4.substr(after_path + 36);
  v2[4] = 2;
  absl::StatusOr<ProcessStateRecord> back = DecodeProcessState(Bytes(v2));
  REQUIRE_MESSAGE(back.ok(), back.status().ToString());
  CHECK(*back == r);

  std::string bad = v4;
  bad[after_path] = 1;  // pipe_size 1 on a regular file
  auto b = DecodeProcessState(Bytes(bad));
  CHECK(absl::IsDataLoss(b.status()));
  CHECK(b.status().message().find("pipe fields on a descriptor that is no pipe") !=
        std::string::npos);
}

TEST_CASE("eventfd and epoll fields belong to their kinds only") {
  ProcessStateRecord r = Sample();
  std::string out;
  REQUIRE(EncodeProcessState(r, &out).ok());
  // The epoll record ends with its two items.
  const std::string items(
      "\x05\x00\x00\x00\x19\x00\x00\x80\x89\x67\x45\x23\x01\xef\xcd\xab"
      "\x4d\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x19\x00\x00\x00"
      "\x07\x00\x00\x00\x00\x00\x00\x00\x12\x00\x00\x00\x00\x00\x00\x00",
      48);
  CHECK(out.find(items) != std::string::npos);
  for (int k = 0; k < 3; ++k) {
    ProcessStateRecord bad = Sample();
    FdRecord& file = bad.fds[0];
    if (k == 0) file.eventfd_count = 1;
    if (k == 1) file.eventfd_semaphore = true;
    if (k == 2) file.epoll_items = {{1, 1, 1, 1}};
    std::string b;
    REQUIRE(EncodeProcessState(bad, &b).ok());
    auto d = DecodeProcessState(Bytes(b));
    CHECK_MESSAGE(absl::IsDataLoss(d.status()), k);
    CHECK(d.status().message().find(k == 2 ? "epoll items on a descriptor" : "eventfd fields on") !=
          std::string::npos);
  }
}

TEST_CASE("dup_of names the first descriptor of the same file, below its own") {
  struct Case {
    int32_t dup_of;
    const char* why;
  };
  // Sample's fd 20 is a dup of fd 3 (the regular file); fds 5 and 6 are a pipe's two ends.
  for (const Case& c : {Case{20, "not below"}, Case{21, "not below"}, Case{4, "no such fd"},
                        Case{5, "another kind"}, Case{-2, "below -1"}}) {
    ProcessStateRecord bad = Sample();
    bad.fds.back().dup_of = c.dup_of;
    std::string b;
    REQUIRE(EncodeProcessState(bad, &b).ok());
    auto d = DecodeProcessState(Bytes(b));
    CHECK_MESSAGE(absl::IsDataLoss(d.status()), c.why);
    CHECK_MESSAGE(d.status().message().find("fd dup_of") != std::string::npos, c.why);
  }
  ProcessStateRecord chain = Sample();  // a dup of a dup: the restorer opens the first only
  FdRecord third = chain.fds.back();
  third.fd = 21;
  third.dup_of = 20;
  chain.fds.push_back(third);
  std::string b;
  REQUIRE(EncodeProcessState(chain, &b).ok());
  CHECK(absl::IsDataLoss(DecodeProcessState(Bytes(b)).status()));
}

TEST_CASE("capture links descriptors that share one open file description (kcmp)") {
  const int file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  REQUIRE(file >= 0);
  const int same = fcntl(file, F_DUPFD_CLOEXEC, 0);
  const int other = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);  // same inode, its own
  const int ev = eventfd(0, EFD_CLOEXEC);
  const int ev_same = dup(ev);
  const int ev_other = eventfd(0, EFD_CLOEXEC);  // the same anon inode, another instance
  REQUIRE((same >= 0 && other >= 0 && ev >= 0 && ev_same >= 0 && ev_other >= 0));
  ProcessStateRecord r = CaptureSelf();
  CHECK(RecordOf(r, file).dup_of == -1);
  CHECK(RecordOf(r, same).dup_of == std::min(file, same));
  CHECK(RecordOf(r, other).dup_of == -1);
  CHECK(RecordOf(r, std::max(ev, ev_same)).dup_of == std::min(ev, ev_same));
  CHECK(RecordOf(r, ev_other).dup_of == -1);
  // A dup2 after the capture (while parked, say): linking again sees all three share now.
  REQUIRE(dup2(file, other) == other);
  REQUIRE(LinkSharedDescriptions(&r));
  const int lowest = std::min({file, same, other});
  for (int fd : {file, same, other}) CHECK(RecordOf(r, fd).dup_of == (fd == lowest ? -1 : lowest));
  CHECK(RecordOf(r, ev_other).dup_of == -1);
  for (int fd : {file, same, other, ev, ev_same, ev_other}) close(fd);
}

TEST_CASE("own pipes: both ends held; the first read end carries the data") {
  ProcessStateRecord r = Sample();
  CHECK_FALSE(IsOwnPipe(r, r.fds[0]));  // a regular file
  CHECK(IsOwnPipe(r, r.fds[1]));
  CHECK(IsOwnPipe(r, r.fds[2]));
  CHECK(HoldsPipeData(r, r.fds[1]));
  CHECK_FALSE(HoldsPipeData(r, r.fds[2]));  // a write end
  // A second read end (a dup) after the first carries nothing.
  FdRecord dup = r.fds[1];
  dup.fd = 9;
  r.fds.push_back(dup);
  CHECK(IsOwnPipe(r, r.fds.back()));
  CHECK_FALSE(HoldsPipeData(r, r.fds.back()));
  CHECK(HoldsPipeData(r, r.fds[1]));
  // Without its write end the pipe leads elsewhere; so does a FIFO opened by path.
  ProcessStateRecord one = Sample();
  one.fds.erase(one.fds.begin() + 2);
  CHECK_FALSE(IsOwnPipe(one, one.fds[1]));
  CHECK_FALSE(HoldsPipeData(one, one.fds[1]));
  ProcessStateRecord fifo = Sample();
  fifo.fds[1].path = fifo.fds[2].path = "/tmp/fifo";
  CHECK_FALSE(IsOwnPipe(fifo, fifo.fds[1]));
  // The same inode on another device is another pipe.
  ProcessStateRecord dev = Sample();
  dev.fds[2].dev = 15;
  CHECK_FALSE(IsOwnPipe(dev, dev.fds[1]));
}

TEST_CASE("an over-long path is refused by the encoder, before writing anything") {
  ProcessStateRecord r = Sample();
  r.vmas[0].path.assign(kMaxPath + 1, 'a');
  std::string out = "keep";
  CHECK(absl::IsInvalidArgument(EncodeProcessState(r, &out)));
  CHECK(out == "keep");
}

TEST_CASE("capture of this process: vmas, fds, cwd, mm fields, sigactions, vdso, digests") {
  RealOs os;
  auto regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());
  ProcessStateRecord r;
  REQUIRE(CaptureProcessBasics(*regions, {}, &r).ok());
  CHECK(r.pid == static_cast<uint32_t>(getpid()));
  CHECK(r.vmas.size() == regions->size());
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd) != nullptr);
  CHECK(r.cwd == cwd);
  CHECK(r.mm.brk >= r.mm.start_brk);
  CHECK(r.mm.start_brk != 0);
  CHECK(r.mm.start_code < r.mm.end_code);
  CHECK(r.vdso.vdso_start != 0);
  CHECK(r.vdso.crc != 0);
  bool saw_stdin = false;
  for (const FdRecord& f : r.fds) saw_stdin |= f.fd == 0;
  CHECK(saw_stdin);
  // A file mapping carries its identity.
  bool saw_file = false;
  for (const VmaRecord& v : r.vmas) {
    if (v.kind == VmaKind::kFile && v.path == r.exe) saw_file |= v.file_size > 0 && v.mtime_ns > 0;
  }
  CHECK(saw_file);
  CaptureSigactions(&r);
  CHECK(r.sigactions.size() >= 60);
  // Digest: crc32c of a known block.
  void* p = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  RamBlock b{7, reinterpret_cast<uintptr_t>(p), 8192, 4096, "t", PROT_READ | PROT_WRITE};
  r.digests.resize(1);
  ComputeDigests({&b, 1}, &r);
  CHECK(r.digests[0].block_id == 7);
  CHECK(r.digests[0].length == 8192);
  CHECK(r.digests[0].crc32c == 0x90444623u);  // crc32c of 8192 zero bytes (computed offline)
  munmap(p, 8192);
  std::string out;
  REQUIRE(EncodeProcessState(r, &out).ok());
  auto back = DecodeProcessState(Bytes(out));
  REQUIRE(back.ok());
  CHECK(*back == r);
}

TEST_CASE("unsupported resources are listed, the agent's own fds ignored") {
  // sv: a UNIX socket whose peer end is gone (another process's, as far as the record knows);
  // ign: one the agent says is its own.
  int sv[2], gone[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, gone) == 0);
  sv[0] = gone[0];
  close(gone[1]);
  sv[1] = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(sv[1] >= 0);
  int pp[2];
  REQUIRE(pipe(pp) == 0);
  FILE* tmp = tmpfile();  // unlinked: nothing to reopen it by
  REQUIRE(tmp != nullptr);
  RealOs os;
  auto regions = MapsParser::Read(os, 0);
  REQUIRE(regions.ok());
  ProcessStateRecord r;
  REQUIRE(CaptureProcessBasics(*regions, {}, &r).ok());
  int ignored[] = {sv[1]};
  std::vector<std::string> why = FindUnsupported(r, ignored);
  auto has = [&](const std::string& prefix) {
    for (const std::string& w : why)
      if (w.rfind(prefix, 0) == 0) return true;
    return false;
  };
  CHECK(has("fd " + std::to_string(sv[0]) + ": socket"));
  const std::string tmp_why = "fd " + std::to_string(fileno(tmp)) + ": /";
  CHECK(has(tmp_why));
  for (const std::string& w : why) {
    if (w.rfind(tmp_why, 0) == 0) {
      CHECK(w.find(" (deleted): a deleted file cannot be opened again at the destination") !=
            std::string::npos);
    }
  }
  fclose(tmp);
  CHECK_FALSE(has("fd " + std::to_string(sv[1]) + ":"));
  // Both ends of pp are ours: a self-pipe, not listed.
  CHECK_FALSE(has("fd " + std::to_string(pp[0]) + ":"));
  CHECK_FALSE(has("fd " + std::to_string(pp[1]) + ":"));
  close(pp[1]);
  ProcessStateRecord half;
  REQUIRE(CaptureProcessBasics(*regions, {}, &half).ok());
  why = FindUnsupported(half, ignored);
  CHECK(has("fd " + std::to_string(pp[0]) + ": pipe to another process (pipe:["));
  close(sv[0]), close(sv[1]), close(pp[0]);
}

TEST_CASE("shared memory no file holds is listed; private memory and shared file mappings not") {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* anon = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  const int mfd = memfd_create("pm-shared", 0);
  REQUIRE(mfd >= 0);
  REQUIRE(ftruncate(mfd, static_cast<off_t>(page)) == 0);
  void* memfd = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  const int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  void* file = mmap(nullptr, page, PROT_READ, MAP_SHARED, exe, 0);  // the file holds it
  void* priv = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE((anon != MAP_FAILED && memfd != MAP_FAILED && file != MAP_FAILED && priv != MAP_FAILED));
  ProcessStateRecord r = CaptureSelf();
  std::vector<std::string> why = FindUnsupportedMemory(r);
  auto listed = [&](void* at) {
    const std::string prefix =
        absl::StrFormat("shared memory 0x%x-", reinterpret_cast<uintptr_t>(at));
    for (const std::string& w : why) {
      if (w.rfind(prefix, 0) == 0) return w;
    }
    return std::string();
  };
  CHECK(listed(anon) ==
        absl::StrFormat("shared memory 0x%x-0x%x (/dev/zero, deleted): only private memory and "
                        "shared mappings of existing files migrate",
                        reinterpret_cast<uintptr_t>(anon),
                        reinterpret_cast<uintptr_t>(anon) + page));
  CHECK(listed(memfd).find("(/memfd:pm-shared, deleted)") != std::string::npos);
  CHECK(listed(file).empty());
  CHECK(listed(priv).empty());
  for (void* p : {anon, memfd, file, priv}) munmap(p, page);
  close(mfd);
  close(exe);
}

TEST_CASE("eventfds and epoll instances: captured from fdinfo, refreshed while parked") {
  int pp[2];
  REQUIRE(pipe(pp) == 0);
  const int ev = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
  const int ep = epoll_create1(0);
  REQUIRE(ev >= 0);
  REQUIRE(ep >= 0);
  epoll_event e{};
  e.events = EPOLLIN | EPOLLET;
  e.data.u64 = 0xab;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e) == 0);
  e.events = EPOLLIN;
  e.data.u64 = 0xcd;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) == 0);
  ProcessStateRecord r = CaptureSelf();
  auto rec = [&](int fd) -> FdRecord& { return RecordOf(r, fd); };
  struct stat pst;
  REQUIRE(fstat(pp[0], &pst) == 0);
  struct stat est;
  REQUIRE(fstat(ev, &est) == 0);
  CHECK(rec(ev).kind == FdKind::kEventfd);
  CHECK(rec(ev).eventfd_count == 5);
  CHECK(rec(ev).eventfd_semaphore);
  CHECK(rec(ep).kind == FdKind::kEpoll);
  // The kernel adds EPOLLERR | EPOLLHUP to every item; items in fdinfo order (by file, fd).
  std::vector<FdRecord::EpollItem> want = {
      {static_cast<uint32_t>(pp[0]), EPOLLIN | EPOLLET | EPOLLERR | EPOLLHUP, 0xab, pst.st_ino},
      {static_cast<uint32_t>(ev), EPOLLIN | EPOLLERR | EPOLLHUP, 0xcd, est.st_ino}};
  auto sorted = [](std::vector<FdRecord::EpollItem> v) {
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.tfd < b.tfd; });
    return v;
  };
  CHECK(sorted(rec(ep).epoll_items) == sorted(want));
  CHECK(rec(ep).epoll_items.capacity() >= 64);
  int ignored[] = {-1};
  auto about = [&](const std::vector<std::string>& why, int fd) {
    std::vector<std::string> out;
    for (const std::string& w : why) {
      if (w.rfind("fd " + std::to_string(fd) + ":", 0) == 0) out.push_back(w);
    }
    return out;
  };
  CHECK(about(FindUnsupported(r, ignored), ev).empty());
  CHECK(about(FindUnsupported(r, ignored), ep).empty());

  // The program goes on: the counter grows, an item goes, another comes. The refresh sees it.
  const uint64_t add = 0x100000000ull;
  REQUIRE(write(ev, &add, sizeof add) == sizeof add);
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_DEL, pp[0], nullptr) == 0);
  e.events = EPOLLOUT;
  e.data.u64 = 0xef;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, pp[1], &e) == 0);
  int failed_fd = -1, err = -1;
  REQUIRE(RefreshEventFds(&r, &failed_fd, &err));
  CHECK(rec(ev).eventfd_count == 0x100000005ull);
  struct stat wst;
  REQUIRE(fstat(pp[1], &wst) == 0);
  want = {{static_cast<uint32_t>(ev), EPOLLIN | EPOLLERR | EPOLLHUP, 0xcd, est.st_ino},
          {static_cast<uint32_t>(pp[1]), EPOLLOUT | EPOLLERR | EPOLLHUP, 0xef, wst.st_ino}};
  CHECK(sorted(rec(ep).epoll_items) == sorted(want));

  // More watched than reserved: refused, named, nothing allocated.
  rec(ep).epoll_items.shrink_to_fit();
  e.events = EPOLLIN;
  e.data.u64 = 0x12;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e) == 0);
  CHECK_FALSE(RefreshEventFds(&r, &failed_fd, &err));
  CHECK(failed_fd == ep);
  CHECK(err == 0);

  // A watched descriptor closed (its file kept open by a dup, so the item stays) and its number
  // reused for another file: listed.
  const int keep = dup(pp[1]);
  REQUIRE(keep >= 0);
  close(pp[1]);
  int other[2];
  REQUIRE(pipe(other) == 0);  // lowest free numbers: other[0] takes pp[1]'s
  REQUIRE(other[0] == pp[1]);
  ProcessStateRecord again = CaptureSelf();
  std::vector<std::string> why = about(FindUnsupported(again, ignored), ep);
  REQUIRE(why.size() == 1);
  CHECK(why[0] == "fd " + std::to_string(ep) + ": epoll watching fd " + std::to_string(pp[1]) +
                      ", which is no longer open as the file it watched");
  close(pp[0]), close(other[0]), close(other[1]), close(ev), close(ep), close(keep);
}

TEST_CASE("a socketpair held whole: peers found, both ends' queued bytes peeked, not taken") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
  const std::string to0("for end zero"), to1(std::string(5000, 'y') + "end one");
  REQUIRE(send(sv[1], to0.data(), to0.size(), 0) == static_cast<ssize_t>(to0.size()));
  for (size_t at = 0; at < to1.size(); at += 1000) {  // several sends, several skbs
    const size_t n = std::min<size_t>(1000, to1.size() - at);
    REQUIRE(send(sv[0], to1.data() + at, n, 0) == static_cast<ssize_t>(n));
  }
  ProcessStateRecord r = CaptureSelf();
  FdRecord* e[2] = {&RecordOf(r, sv[0]), &RecordOf(r, sv[1])};
  CHECK(e[0]->socket_peer == e[1]->inode);
  CHECK(e[1]->socket_peer == e[0]->inode);
  CHECK(IsOwnSocketPair(r, *e[0]));
  CHECK(IsOwnSocketPair(r, *e[1]));
  int ignored[] = {-1};
  for (const std::string& w : FindUnsupported(r, ignored)) {
    CHECK_MESSAGE(w.rfind("fd " + std::to_string(sv[0]) + ":", 0) != 0, w);
    CHECK_MESSAGE(w.rfind("fd " + std::to_string(sv[1]) + ":", 0) != 0, w);
  }
  int failed_fd = -1, err = -1;
  REQUIRE(RefreshPipeData(&r, &failed_fd, &err));
  CHECK(e[0]->unread == to0);
  CHECK(e[1]->unread == to1);
  char buf[8192];
  REQUIRE(recv(sv[1], buf, sizeof buf, 0) == static_cast<ssize_t>(to1.size()));  // still there
  CHECK(std::string(buf, to1.size()) == to1);
  // Without its peer in the record the socket leads elsewhere.
  ProcessStateRecord half = r;
  half.fds.erase(half.fds.begin() + (e[1] - r.fds.data()));
  for (const FdRecord& f : half.fds) {
    if (static_cast<int>(f.fd) == sv[0]) CHECK_FALSE(IsOwnSocketPair(half, f));
  }
  close(sv[0]), close(sv[1]);
}

// How many descriptors this process has open (below 4096).
size_t OpenFds() {
  size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
  return n;
}

// One byte with room for one descriptor (SCM_RIGHTS), for sendmsg and recvmsg.
struct OneByteMessage {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr mh{};
  OneByteMessage() {
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
  }
  OneByteMessage(const OneByteMessage&) = delete;
  OneByteMessage& operator=(const OneByteMessage&) = delete;
};

TEST_CASE("descriptors in flight on a socketpair fail the refresh, and leave nothing behind") {
  int sv[2], p[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
  REQUIRE(pipe(p) == 0);
  OneByteMessage out;
  out.byte = 'x';
  cmsghdr* c = CMSG_FIRSTHDR(&out.mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &p[0], sizeof(int));
  REQUIRE(sendmsg(sv[1], &out.mh, 0) == 1);  // one byte and the pipe's read end, for sv[0]
  ProcessStateRecord r = CaptureSelf();
  const size_t before = OpenFds();
  int failed_fd = -1, err = -1;
  const char* cause = nullptr;
  CHECK_FALSE(RefreshPipeData(&r, &failed_fd, &err, &cause));
  CHECK(failed_fd == sv[0]);
  CHECK(err == 0);
  REQUIRE(cause != nullptr);
  CHECK(std::string(cause) == "descriptors in flight (SCM_RIGHTS)");
  CHECK(OpenFds() == before);  // the peek's copies were closed
  // Still queued, descriptor and all, for the program.
  OneByteMessage in;
  REQUIRE(recvmsg(sv[0], &in.mh, 0) == 1);
  CHECK(in.byte == 'x');
  cmsghdr* rc = CMSG_FIRSTHDR(&in.mh);
  REQUIRE(rc != nullptr);
  CHECK(rc->cmsg_type == SCM_RIGHTS);
  int passed = -1;
  std::memcpy(&passed, CMSG_DATA(rc), sizeof passed);
  CHECK(passed >= 0);
  close(passed);
  // Nothing in flight any more: the refresh passes.
  int failed2 = -1, err2 = -1;
  CHECK(RefreshPipeData(&r, &failed2, &err2));
  for (int fd : {sv[0], sv[1], p[0], p[1]}) close(fd);
}

TEST_CASE("a self-pipe's unread bytes are captured without taking them out of the pipe") {
  int pp[2], empty[2];
  REQUIRE(pipe(pp) == 0);
  REQUIRE(pipe2(empty, O_NONBLOCK) == 0);
  const std::string bytes("unread\0bytes\xff", 14);
  REQUIRE(write(pp[1], bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  ProcessStateRecord r = CaptureSelf();
  auto rec = [&](int fd) -> FdRecord& { return RecordOf(r, fd); };
  const int size = fcntl(pp[0], F_GETPIPE_SZ);
  CHECK(rec(pp[0]).pipe_size == static_cast<uint32_t>(size));
  CHECK(rec(pp[1]).pipe_size == static_cast<uint32_t>(size));
  CHECK(rec(pp[0]).unread.capacity() >= static_cast<size_t>(size));
  CHECK(RefreshGrowthBytes(r) >= 2 * static_cast<size_t>(size));
  CHECK((rec(empty[1]).flags & O_NONBLOCK) != 0);

  int failed_fd = -1, err = -1;
  REQUIRE(RefreshPipeData(&r, &failed_fd, &err));
  CHECK(rec(pp[0]).unread == bytes);
  CHECK(rec(pp[1]).unread.empty());
  CHECK(rec(empty[0]).unread.empty());
  // Still in the pipe, in full.
  char buf[64];
  REQUIRE(read(pp[0], buf, sizeof buf) == static_cast<ssize_t>(bytes.size()));
  CHECK(std::string(buf, bytes.size()) == bytes);

  // A pipe made larger since the capture, holding more than was reserved: refused, named.
  REQUIRE(fcntl(pp[1], F_SETPIPE_SZ, 4 * size) >= 4 * size);
  std::string more(static_cast<size_t>(rec(pp[0]).unread.capacity()) + 100, 'x');
  REQUIRE(write(pp[1], more.data(), more.size()) == static_cast<ssize_t>(more.size()));
  CHECK_FALSE(RefreshPipeData(&r, &failed_fd, &err));
  CHECK(failed_fd == pp[0]);
  CHECK(err == 0);
  close(pp[0]), close(pp[1]), close(empty[0]), close(empty[1]);
}

}  // namespace
}  // namespace procmig

namespace procmig {
namespace {

TEST_CASE("vma file identities: each kind's length rule, both ways") {
  ProcessStateRecord r = Sample();
  std::string out;
  for (auto [kind, len, ok] :
       {std::tuple{FileIdKind::kNone, 0, true}, std::tuple{FileIdKind::kUnknown, 0, true},
        std::tuple{FileIdKind::kUnknown, 1, false}, std::tuple{FileIdKind::kBuildId, 0, false},
        std::tuple{FileIdKind::kBuildId, 20, true}, std::tuple{FileIdKind::kBuildId, 64, true},
        std::tuple{FileIdKind::kBuildId, 65, false}, std::tuple{FileIdKind::kCrc32c, 4, true},
        std::tuple{FileIdKind::kCrc32c, 3, false}}) {
    r.vmas[0].id = {kind, std::string(static_cast<size_t>(len), '\x5a')};
    out.clear();
    CHECK_MESSAGE(EncodeProcessState(r, &out).ok() == ok, static_cast<int>(kind), " ", len);
    if (!ok) continue;
    auto back = DecodeProcessState(Bytes(out));
    REQUIRE(back.ok());
    CHECK(back->vmas[0].id == r.vmas[0].id);
  }
  // A decoder meets the same rules: crc32c with 3 bytes, and an unknown kind 4.
  r.vmas[0].id = {FileIdKind::kCrc32c, "abcd"};
  out.clear();
  REQUIRE(EncodeProcessState(r, &out).ok());
  const size_t at =
      out.find(std::string("libc.so.6\x03\x04"
                           "abcd",
                           15));
  REQUIRE(at != std::string::npos);
  std::string three = out;
  three[at + 10] = 3;  // id_len 3: the last id byte becomes the next field
  CHECK(DecodeProcessState(Bytes(three)).status().message() ==
        "decode process state: bad vma identity");
  std::string kind4 = out;
  kind4[at + 9] = 4;
  CHECK(DecodeProcessState(Bytes(kind4)).status().message() ==
        "decode process state: bad vma identity");
}

}  // namespace
}  // namespace procmig
