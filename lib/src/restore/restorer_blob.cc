// The restorer blob (see restorer_blob.h). Compiled freestanding (restore/CMakeLists.txt): no
// builtins, no stack protector, no jump tables, no sanitizers. Every function here lives in the
// section "procmig_blob", calls only functions of the same section, reads no global data, and uses
// no string literals: the section is copied elsewhere and run after the rest is unmapped.
// Includes nothing from the C++ library: it is compiled with -mgeneral-regs-only.
#include "restore/restorer_abi.h"

namespace procmig::restore_blob {
namespace abi = ::procmig::restore_abi;

#define BLOB __attribute__((section("procmig_blob"), visibility("hidden"), noinline))

extern "C" {
void procmig_blob_entry(abi::Args* args, uint64_t stack_top) __attribute__((visibility("hidden")));
long procmig_blob_clone3(void* clone_args, uint64_t size) __attribute__((visibility("hidden")));
[[noreturn]] void procmig_blob_resume(const abi::Thread* t, const abi::Args* a)
    __attribute__((visibility("hidden")));
void procmig_blob_main(abi::Args* a) BLOB;
void procmig_blob_thread(abi::Args* a, uint64_t index) BLOB;
}

// Entry, clone3 (the child starts on its own stack: it pops the function and argument the
// parent left there) and the final jump into a park context (registers as procmig_park_save
// stored them, rax = the Args block's address so the save "returns again", non-zero).
asm(R"(
        .pushsection procmig_blob,"ax",@progbits
        .globl  procmig_blob_entry
        .hidden procmig_blob_entry
procmig_blob_entry:
        movq    %rsi, %rsp
        xorl    %ebp, %ebp
        call    procmig_blob_main
        ud2
        .globl  procmig_blob_clone3
        .hidden procmig_blob_clone3
procmig_blob_clone3:
        movl    $435, %eax
        syscall
        testq   %rax, %rax
        jnz     1f
        popq    %rax
        popq    %rdi
        popq    %rsi
        xorl    %ebp, %ebp
        andq    $-16, %rsp
        call    *%rax
        ud2
1:      ret
        .globl  procmig_blob_resume
        .hidden procmig_blob_resume
procmig_blob_resume:
        movq    0(%rdi), %rbx
        movq    8(%rdi), %rbp
        movq    16(%rdi), %r12
        movq    24(%rdi), %r13
        movq    32(%rdi), %r14
        movq    40(%rdi), %r15
        movq    48(%rdi), %rsp
        movq    56(%rdi), %rcx
        movq    %rsi, %rax
        jmp     *%rcx
        .popsection
)");

namespace {

static_assert(__builtin_offsetof(abi::Thread, rbx) == 0);
static_assert(__builtin_offsetof(abi::Thread, rsp) == 48);
static_assert(__builtin_offsetof(abi::Thread, rip) == 56);

enum : long {
  kSysRead = 0,
  kSysWrite = 1,
  kSysClose = 3,
  kSysLseek = 8,
  kSysMmap = 9,
  kSysMprotect = 10,
  kSysMunmap = 11,
  kSysRtSigaction = 13,
  kSysRtSigprocmask = 14,
  kSysMremap = 25,
  kSysSigaltstack = 131,
  kSysPrctl = 157,
  kSysArchPrctl = 158,
  kSysGetpid = 39,
  kSysExit = 60,
  kSysChdir = 80,
  kSysFutex = 202,
  kSysSetTidAddress = 218,
  kSysExitGroup = 231,
  kSysOpenat = 257,
  kSysSetRobustList = 273,
  kSysDup3 = 292,
  kSysRseq = 334,
  kSysCloseRange = 436,
  kSysEpollCtl = 233,
  kSysClockGettime = 228,
};

BLOB long Sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  long ret;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
               : "rcx", "r11", "memory");
  return ret;
}
BLOB long Sys(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  return Sys6(n, a, b, c, d, e, f);
}

BLOB bool Failed(long r) { return r < 0 && r > -4096; }

BLOB void Copy(uint8_t* d, const uint8_t* s, uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    asm volatile("movq (%1), %0" : "=r"(v) : "r"(s + i) : "memory");
    asm volatile("movq %1, (%0)" : : "r"(d + i), "r"(v) : "memory");
  }
  for (; i < n; ++i) {
    uint8_t v;
    asm volatile("movb (%1), %0" : "=q"(v) : "r"(s + i) : "memory");
    asm volatile("movb %1, (%0)" : : "r"(d + i), "q"(v) : "memory");
  }
}

// An array of the Args block (a macro: a template would not stay in the section).
#define AT(T, a, off) reinterpret_cast<T*>(reinterpret_cast<uint8_t*>(a) + (off))
BLOB const char* Str(abi::Args* a, uint64_t off) { return reinterpret_cast<const char*>(a) + off; }

BLOB uint32_t AtomicLoad(uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
BLOB void AtomicStore(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
BLOB void Wake(uint32_t* p) { Sys(kSysFutex, reinterpret_cast<long>(p), 1 | 128, 0x7fffffff); }
BLOB void WaitWhile(uint32_t* p, uint32_t v) {
  while (AtomicLoad(p) == v) Sys(kSysFutex, reinterpret_cast<long>(p), 0 | 128, v, 0);
}

BLOB uint64_t NowNs() {
  struct {
    int64_t sec, nsec;
  } ts;
  Sys(kSysClockGettime, 1 /* CLOCK_MONOTONIC */, reinterpret_cast<long>(&ts));
  return static_cast<uint64_t>(ts.sec) * 1000000000ull + static_cast<uint64_t>(ts.nsec);
}

BLOB void Mark(abi::Args* a, int phase) { a->phase_ns[phase] = NowNs(); }

BLOB void Report(abi::Args* a, uint32_t kind, uint32_t step, long err, uint64_t index,
                 uint64_t value) {
  abi::Report r;
  for (int i = 0; i < 7; ++i) r.phase_ns[i] = a->phase_ns[i];
  r.slowest_op = a->slowest_op;
  r.slowest_op_ns = a->slowest_op_ns;
  r.kind = kind;
  r.step = step;
  r.err = static_cast<int32_t>(-err);
  r.index = static_cast<uint32_t>(index);
  r.value = value;
  Sys(kSysWrite, a->report_fd, reinterpret_cast<long>(&r), sizeof r);
}

[[noreturn]] BLOB void Die(abi::Args* a, uint32_t step, long err, uint64_t index) {
  Report(a, abi::kReportFailed, step, err, index, 0);
  AtomicStore(&a->go, 2);
  Wake(&a->go);
  for (;;) Sys(kSysExitGroup, 127);
}

// The per-thread kernel state a thread can only set for itself.
BLOB long ThreadState(abi::Args* a, abi::Thread* t) {
  long tid = Sys(kSysSetTidAddress, static_cast<long>(t->tid_address));
  t->new_tid = static_cast<uint32_t>(tid);
  if ((a->flags & abi::kArgPatchTid) != 0 && t->tid_address != 0) {
    *reinterpret_cast<volatile int32_t*>(t->tid_address) = static_cast<int32_t>(tid);
  }
  long r;
  if (t->robust_list != 0) {
    r = Sys(kSysSetRobustList, static_cast<long>(t->robust_list),
            static_cast<long>(t->robust_list_len));
    if (Failed(r)) return r;
  }
  if (t->rseq_area != 0) {
    r = Sys(kSysRseq, static_cast<long>(t->rseq_area), t->rseq_size, 0, a->rseq_sig);
    if (Failed(r)) return r;
  }
  struct {
    uint64_t sp;
    int32_t flags;
    int32_t pad;
    uint64_t size;
  } ss;
  ss.pad = 0;
  if ((t->altstack_flags & 2 /* SS_DISABLE */) != 0 || t->altstack_size == 0) {
    ss.sp = 0;
    ss.flags = 2;
    ss.size = 0;
  } else {
    ss.sp = t->altstack_sp;
    ss.flags = 0;
    ss.size = t->altstack_size;
  }
  r = Sys(kSysSigaltstack, reinterpret_cast<long>(&ss), 0);
  if (Failed(r)) return r;
  if (t->gs_base != 0) {
    r = Sys(kSysArchPrctl, 0x1001 /* ARCH_SET_GS */, static_cast<long>(t->gs_base));
    if (Failed(r)) return r;
  }
  r = Sys(kSysArchPrctl, 0x1002 /* ARCH_SET_FS */, static_cast<long>(t->fs_base));
  if (Failed(r)) return r;
  return 0;
}

// The file the last kOpMapFile opened, kept open for the next one of the same file (a library's
// segments come in a row).
struct OpenFile {
  uint64_t path = 0;
  uint32_t open_flags = 0;
  long fd = -1;
};

BLOB void CloseFile(OpenFile* f) {
  if (f->fd >= 0) Sys(kSysClose, f->fd);
  f->fd = -1;
  f->path = 0;
}

BLOB long RunOp(abi::Args* a, const abi::Op& op, OpenFile* file) {
  long r = 0;
  if (op.kind == abi::kOpMove) {
    r = Sys(kSysMremap, static_cast<long>(op.src), static_cast<long>(op.len),
            static_cast<long>(op.len), 1 | 2 /* MREMAP_MAYMOVE | MREMAP_FIXED */,
            static_cast<long>(op.dst));
    if (Failed(r)) return r;
    if ((op.flags & abi::kMoveKeepsProt) == 0) {
      r = Sys(kSysMprotect, static_cast<long>(op.dst), static_cast<long>(op.len), op.prot);
    }
  } else if (op.kind == abi::kOpMapAnon) {
    r = Sys(kSysMmap, static_cast<long>(op.dst), static_cast<long>(op.len), op.prot,
            0x20 /* MAP_ANONYMOUS */ | 0x10 /* MAP_FIXED */ | op.flags, -1, 0);
  } else if (op.kind == abi::kOpMapFile) {
    if (file->fd < 0 || file->path != op.path || file->open_flags != op.open_flags) {
      CloseFile(file);
      long fd = Sys(kSysOpenat, -100 /* AT_FDCWD */, reinterpret_cast<long>(Str(a, op.path)),
                    op.open_flags | 02000000 /* O_CLOEXEC */);
      if (Failed(fd)) return fd;
      file->fd = fd;
      file->path = op.path;
      file->open_flags = op.open_flags;
    }
    r = Sys(kSysMmap, static_cast<long>(op.dst), static_cast<long>(op.len), op.prot,
            0x10 /* MAP_FIXED */ | op.flags, file->fd, static_cast<long>(op.offset));
  } else if (op.kind == abi::kOpCopy) {
    Copy(reinterpret_cast<uint8_t*>(op.dst), reinterpret_cast<const uint8_t*>(op.src), op.len);
    r = Sys(kSysMunmap, static_cast<long>(op.src), static_cast<long>(op.len));
  } else if (op.kind == abi::kOpProtect) {
    r = Sys(kSysMprotect, static_cast<long>(op.dst), static_cast<long>(op.len), op.prot);
  } else if (op.kind == abi::kOpName) {
    Sys(kSysPrctl, 0x53564d41 /* PR_SET_VMA */, 0 /* PR_SET_VMA_ANON_NAME */,
        static_cast<long>(op.dst), static_cast<long>(op.len),
        reinterpret_cast<long>(Str(a, op.path)));
  } else {
    r = -22;
  }
  return Failed(r) ? r : 0;
}

}  // namespace

extern "C" void procmig_blob_thread(abi::Args* a, uint64_t index) {
  abi::Thread* t = AT(abi::Thread, a, a->threads) + index;
  long r = ThreadState(a, t);
  if (Failed(r)) {
    a->fail_err = static_cast<uint32_t>(-r);
    a->fail_index = static_cast<uint32_t>(index);
    a->fail_step = abi::kStepThreadState;
    AtomicStore(&a->failed, 1);
    Wake(&a->ready);
    for (;;) Sys(kSysExit, 1);
  }
  __atomic_add_fetch(&a->ready, 1, __ATOMIC_ACQ_REL);
  Wake(&a->ready);
  WaitWhile(&a->go, 0);
  if (AtomicLoad(&a->go) != 1) {
    for (;;) Sys(kSysExit, 1);
  }
  procmig_blob_resume(t, a);
}

extern "C" void procmig_blob_main(abi::Args* a) {
  // Every signal blocked until each thread's rt_sigreturn restores its own mask.
  Mark(a, 0);
  uint64_t all = ~0ull;
  Sys(kSysRtSigprocmask, 2 /* SIG_SETMASK */, reinterpret_cast<long>(&all), 0, 8);
  long r;
  if (a->self_rseq != 0) {
    // glibc registers 32 bytes whatever __rseq_size says; try both. A thread that was never
    // registered (a child of a CLONE_VM init) fails both, harmlessly.
    r = Sys(kSysRseq, static_cast<long>(a->self_rseq), 32, 1 /* UNREGISTER */, a->rseq_sig);
    if (Failed(r)) {
      Sys(kSysRseq, static_cast<long>(a->self_rseq), a->self_rseq_len, 1, a->rseq_sig);
    }
  }
  // Descriptors: redirected stdio and the process's own pipes first (from descriptors the
  // receiver holds, all above the restored ones, which the close below then drops), then keep
  // stdio, those, and the report pipe only.
  {
    const abi::Fd* fds = AT(abi::Fd, a, a->fds);
    for (uint32_t i = 0; i < a->nfds; ++i) {
      if (fds[i].from_fd < 0) continue;
      r = Sys(kSysDup3, fds[i].from_fd, fds[i].fd, fds[i].open_flags & 02000000 /* O_CLOEXEC */);
      if (Failed(r)) Die(a, abi::kStepFds, r, i);
    }
    long lo = 3;
    for (;;) {
      long next = a->report_fd;  // the lowest descriptor set up above in [lo, report_fd)
      for (uint32_t i = 0; i < a->nfds; ++i) {
        if (fds[i].from_fd >= 0 && fds[i].fd >= lo && fds[i].fd < next) next = fds[i].fd;
      }
      if (next > lo) Sys(kSysCloseRange, lo, next - 1, 0);
      if (next >= a->report_fd) break;
      lo = next + 1;
    }
  }
  Sys(kSysCloseRange, a->report_fd + 1, 0x7fffffff, 0);
  Mark(a, 1);
  // Unmap everything but the kept ranges (sorted, disjoint).
  {
    const abi::Range* keep = AT(abi::Range, a, a->keep);
    uint64_t from = 0;
    const uint64_t kTop = 0x7ffffffff000ull;
    for (uint32_t i = 0; i <= a->nkeep; ++i) {
      uint64_t to = i < a->nkeep ? keep[i].start : kTop;
      if (to > from) {
        r = Sys(kSysMunmap, static_cast<long>(from), static_cast<long>(to - from));
        if (Failed(r)) Die(a, abi::kStepUnmap, r, i);
      }
      if (i < a->nkeep) from = keep[i].end;
    }
  }
  Mark(a, 2);
  const abi::Op* ops = AT(abi::Op, a, a->ops);
  {
    OpenFile file;
    uint64_t t = NowNs();
    for (uint32_t i = 0; i < a->nops; ++i) {
      r = RunOp(a, ops[i], &file);
      if (Failed(r)) Die(a, abi::kStepMemory, r, i);
      const uint64_t now = NowNs();
      if (now - t > a->slowest_op_ns) {
        a->slowest_op_ns = now - t;
        a->slowest_op = i;
      }
      t = now;
    }
    CloseFile(&file);
  }
  Mark(a, 3);
  // mm fields; the exe link too when asked (falls back to keeping it).
  {
    abi::MmMap& mm = a->mm;  // in place: a struct copy could become a memcpy call
    mm.exe_fd = 0xffffffffu;
    long exe = -1;
    if ((a->flags & abi::kArgSetExe) != 0 && a->exe_path != 0) {
      exe = Sys(kSysOpenat, -100, reinterpret_cast<long>(Str(a, a->exe_path)),
                02000000 /* O_CLOEXEC */);
      if (!Failed(exe)) mm.exe_fd = static_cast<uint32_t>(exe);
    }
    r = Sys(kSysPrctl, 35 /* PR_SET_MM */, 14 /* PR_SET_MM_MAP */, reinterpret_cast<long>(&mm),
            sizeof mm, 0);
    if (Failed(r) && mm.exe_fd != 0xffffffffu) {
      mm.exe_fd = 0xffffffffu;
      r = Sys(kSysPrctl, 35, 14, reinterpret_cast<long>(&mm), sizeof mm, 0);
    }
    if (!Failed(exe)) Sys(kSysClose, exe);
    if (Failed(r)) Die(a, abi::kStepMm, r, 0);
  }
  {
    const abi::Sigaction* sa = AT(abi::Sigaction, a, a->sigactions);
    for (uint32_t s = 1; s <= 64; ++s) {
      if ((a->sigaction_set & (1ull << (s - 1))) == 0 || s == 9 || s == 19) continue;
      r = Sys(kSysRtSigaction, s, reinterpret_cast<long>(&sa[s - 1]), 0, 8);
      if (Failed(r)) Die(a, abi::kStepSigactions, r, s);
    }
  }
  {
    const abi::Fd* fds = AT(abi::Fd, a, a->fds);
    for (uint32_t i = 0; i < a->nfds; ++i) {
      const abi::Fd& f = fds[i];
      if (f.from_fd >= 0) continue;  // set up with the descriptors, above
      if (f.same_as >= 0) {          // the description an earlier entry set up, shared
        r = Sys(kSysDup3, f.same_as, f.fd, f.open_flags & 02000000);
        if (Failed(r)) Die(a, abi::kStepFiles, r, i);
        continue;
      }
      long fd = Sys(kSysOpenat, -100, reinterpret_cast<long>(Str(a, f.path)),
                    f.open_flags & ~(0100u | 01000u | 0200u) /* no O_CREAT, O_TRUNC, O_EXCL */);
      if (Failed(fd)) Die(a, abi::kStepFiles, fd, i);
      if (fd != f.fd) {
        r = Sys(kSysDup3, fd, f.fd, f.open_flags & 02000000);
        Sys(kSysClose, fd);
        if (Failed(r)) Die(a, abi::kStepFiles, r, i);
      }
      if ((f.open_flags & 02000 /* O_APPEND */) == 0) {
        r = Sys(kSysLseek, f.fd, static_cast<long>(f.offset), 0 /* SEEK_SET */);
        if (Failed(r)) Die(a, abi::kStepFiles, r, i);
      }
    }
  }
  {
    // What each epoll instance watched, now that every descriptor is in place (the kernel keys
    // an item by descriptor number). x86-64's struct epoll_event is packed.
    struct __attribute__((packed)) {
      uint32_t events;
      uint64_t data;
    } ev;
    const abi::EpollItem* items = AT(abi::EpollItem, a, a->epoll_items);
    for (uint32_t i = 0; i < a->nepoll_items; ++i) {
      ev.events = items[i].events;
      ev.data = items[i].data;
      r = Sys(kSysEpollCtl, items[i].epfd, 1 /* EPOLL_CTL_ADD */, items[i].tfd,
              reinterpret_cast<long>(&ev));
      if (Failed(r)) Die(a, abi::kStepEpoll, r, i);
    }
  }
  if (a->cwd != 0) {
    r = Sys(kSysChdir, reinterpret_cast<long>(Str(a, a->cwd)));
    if (Failed(r)) Die(a, abi::kStepCwd, r, 0);
  }
  Mark(a, 4);
  if (a->comm[0] != 0) Sys(kSysPrctl, 15 /* PR_SET_NAME */, reinterpret_cast<long>(a->comm));
  abi::Thread* threads = AT(abi::Thread, a, a->threads);
  for (uint32_t i = 1; i < a->nthreads; ++i) {
    abi::Thread& t = threads[i];
    // The child pops: function, args pointer, index.
    uint64_t* sp = reinterpret_cast<uint64_t*>(t.stack_top) - 4;
    sp[0] = reinterpret_cast<uint64_t>(&procmig_blob_thread);
    sp[1] = reinterpret_cast<uint64_t>(a);
    sp[2] = i;
    sp[3] = 0;
    uint64_t set_tid = t.tid;
    struct {
      uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
      uint64_t set_tid, set_tid_size, cgroup;
    } ca;
    ca.flags =
        0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000;  // VM FS FILES SIGHAND THREAD SYSVSEM
    ca.pidfd = 0;
    ca.child_tid = 0;
    ca.parent_tid = 0;
    ca.exit_signal = 0;
    ca.stack = t.stack_top - 65536;
    ca.stack_size = 65536 - 32;
    ca.tls = 0;
    ca.set_tid = (a->flags & abi::kArgSetTid) != 0 ? reinterpret_cast<uint64_t>(&set_tid) : 0;
    ca.set_tid_size = (a->flags & abi::kArgSetTid) != 0 ? 1 : 0;
    ca.cgroup = 0;
    r = procmig_blob_clone3(&ca, sizeof ca);
    if (Failed(r)) Die(a, abi::kStepThreads, r, i);
  }
  Mark(a, 5);
  r = ThreadState(a, &threads[0]);
  if (Failed(r)) Die(a, abi::kStepThreadState, r, 0);
  for (;;) {
    uint32_t ready = AtomicLoad(&a->ready);
    if (AtomicLoad(&a->failed) != 0)
      Die(a, a->fail_step, -static_cast<long>(a->fail_err), a->fail_index);
    if (ready + 1 >= a->nthreads) break;
    Sys(kSysFutex, reinterpret_cast<long>(&a->ready), 0 | 128, ready, 0);
  }
  Mark(a, 6);
  Report(a, abi::kReportRunning, abi::kStepNone, 0, 0, a->nthreads);
  Sys(kSysClose, a->report_fd);
  AtomicStore(&a->go, 1);
  Wake(&a->go);
  procmig_blob_resume(&threads[0], a);
}

}  // namespace procmig::restore_blob
