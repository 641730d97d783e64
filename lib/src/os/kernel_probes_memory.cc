// Probes of the memory-tracking kernel interfaces: userfaultfd and its feature bits,
// PAGEMAP_SCAN, soft-dirty.
#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "os/kernel_compat.h"
#include "os/kernel_probes.h"

namespace procmig::probes {
namespace {

constexpr char kPagemap[] = "/proc/self/pagemap";
constexpr char kClearRefs[] = "/proc/self/clear_refs";
constexpr int kUffdFlags = O_CLOEXEC | O_NONBLOCK;

void Add(std::vector<Feature>* out, absl::string_view section, absl::string_view name,
         bool available, std::string reason) {
  out->push_back(Feature{std::string(section), std::string(name), available, std::move(reason)});
}

// userfaultfd(2); falls back to UFFD_USER_MODE_ONLY, which an unprivileged process may use even
// when vm.unprivileged_userfaultfd is 0 (the kernel only delivers user-mode faults then).
absl::StatusOr<int> OpenUffd(Os& os, bool* user_mode_only) {
  *user_mode_only = false;
  absl::StatusOr<int> fd = os.Userfaultfd(kUffdFlags);
  if (!fd.ok() && OsErrno(fd.status()) == EPERM) {
    absl::StatusOr<int> retry = os.Userfaultfd(kUffdFlags | UFFD_USER_MODE_ONLY);
    if (retry.ok()) {
      *user_mode_only = true;
      return retry;
    }
  }
  return fd;
}

// UFFDIO_API handshake asking for `features`; returns what the kernel reported.
absl::StatusOr<uffdio_api> UffdApi(Os& os, int fd, uint64_t features) {
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = features;
  RETURN_IF_ERROR(os.Ioctl(fd, UFFDIO_API, &api).status());
  return api;
}

// A userfaultfd with asynchronous write-protection enabled, as the pagemap-scan tracker uses it.
// Tries userfaultfd(2) first, then /dev/userfaultfd (which an administrator may open to users
// who cannot use the syscall): either serves the trackers.
absl::StatusOr<int> OpenAsyncWpUffd(Os& os, std::string* failure) {
  bool user_mode_only;
  absl::StatusOr<int> fd = OpenUffd(os, &user_mode_only);
  if (!fd.ok()) {
    *failure = Failed("userfaultfd(2)", fd.status());
    absl::StatusOr<int> dev = os.Open("/dev/userfaultfd", O_RDWR, 0);
    if (!dev.ok()) {
      absl::StrAppend(failure, "; ", Failed("open /dev/userfaultfd", dev.status()));
      return fd.status();
    }
    // USERFAULTFD_IOC_NEW takes the flags by value, not through a pointer.
    fd = os.Ioctl(*dev, USERFAULTFD_IOC_NEW,
                  reinterpret_cast<void*>(static_cast<uintptr_t>(kUffdFlags)));
    (void)os.Close(*dev);
    if (!fd.ok()) {
      absl::StrAppend(failure, "; ", Failed("USERFAULTFD_IOC_NEW", fd.status()));
      return fd.status();
    }
  }
  absl::StatusOr<uffdio_api> api =
      UffdApi(os, *fd,
              UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC);
  if (!api.ok()) {
    *failure = Failed("UFFDIO_API with WP|WP_UNPOPULATED|WP_ASYNC", api.status());
    (void)os.Close(*fd);
    return api.status();
  }
  return *fd;
}

struct UffdBit {
  const char* name;
  uint64_t bit;
  const char* macro;
  const char* since;  // first kernel that has it (the config must enable it too)
};

constexpr UffdBit kUffdBits[] = {
    {feature::kUffdWp, UFFD_FEATURE_PAGEFAULT_FLAG_WP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP", "5.7"},
    {feature::kUffdWpAsync, UFFD_FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC", "6.7"},
    {feature::kUffdWpUnpopulated, UFFD_FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED",
     "6.4"},
    {feature::kUffdWpHugetlbfsShmem, UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
     "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "5.19"},
    {feature::kUffdMinorShmem, UFFD_FEATURE_MINOR_SHMEM, "UFFD_FEATURE_MINOR_SHMEM", "5.14"},
    {feature::kUffdMinorHugetlbfs, UFFD_FEATURE_MINOR_HUGETLBFS, "UFFD_FEATURE_MINOR_HUGETLBFS",
     "5.13"},
    {feature::kUffdMove, UFFD_FEATURE_MOVE, "UFFD_FEATURE_MOVE", "6.8"},
};

// One PAGEMAP_SCAN over [start, start + pages * page_size) reporting `mask` categories.
absl::StatusOr<int> Scan(Os& os, int pagemap_fd, char* start, size_t length, uint64_t flags,
                         uint64_t mask, page_region* vec, size_t vec_len, uint64_t* walk_end) {
  pm_scan_arg arg = {};
  arg.size = sizeof(arg);
  arg.flags = flags;
  arg.start = reinterpret_cast<uintptr_t>(start);
  arg.end = arg.start + length;
  arg.vec = reinterpret_cast<uintptr_t>(vec);
  arg.vec_len = vec_len;
  arg.category_mask = mask;
  arg.return_mask = mask;
  ASSIGN_OR_RETURN(int n, os.Ioctl(pagemap_fd, PAGEMAP_SCAN, &arg));
  *walk_end = arg.walk_end;
  return n;
}

// Fresh private anonymous pages for a probe, kept out of THP (and mTHP) so that touching one
// page populates exactly one page.
absl::StatusOr<char*> MapProbePages(Os& os, size_t length) {
  ASSIGN_OR_RETURN(void* p, os.Mmap(nullptr, length, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  (void)os.Madvise(p, length, MADV_NOHUGEPAGE);  // best effort: kernels without THP refuse it
  return static_cast<char*>(p);
}

void Touch(char* page, char value) { *static_cast<volatile char*>(page) = value; }

std::string Region(uintptr_t base, size_t page_size, const page_region& r) {
  return absl::StrFormat("[page %d, page %d) categories 0x%x",
                         static_cast<int64_t>((r.start - base) / page_size),
                         static_cast<int64_t>((r.end - base) / page_size), r.categories);
}

// The write-protect cycle of the pagemap-scan tracker on 4 pages: register them with an async
// WP uffd, re-protect everything with PM_SCAN_WP_MATCHING, write page 2, and expect exactly
// page 2 to be reported written. Returns the reason; sets *ok.
std::string WpCycle(Os& os, int pagemap_fd, bool* ok) {
  *ok = false;
  const size_t ps = os.PageSize();
  const size_t length = 4 * ps;
  absl::StatusOr<char*> mem = MapProbePages(os, length);
  if (!mem.ok()) return Failed("mmap probe pages", mem.status());
  ScopedMapping mapping(os, *mem, length);
  char* p = *mem;
  for (size_t i = 0; i < 4; ++i) Touch(p + i * ps, 1);

  std::string failure;
  absl::StatusOr<int> uffd_or = OpenAsyncWpUffd(os, &failure);
  if (!uffd_or.ok()) return failure;
  ScopedFd uffd(os, *uffd_or);  // closed before the mapping goes: that unregisters the range
  uffdio_register reg = {};
  reg.range.start = reinterpret_cast<uintptr_t>(p);
  reg.range.len = length;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  absl::Status s = os.Ioctl(uffd.get(), UFFDIO_REGISTER, &reg).status();
  if (!s.ok()) return Failed("UFFDIO_REGISTER mode WP", s);

  page_region vec[4] = {};
  uint64_t walk_end = 0;
  absl::StatusOr<int> first =
      Scan(os, pagemap_fd, p, length, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, PAGE_IS_WRITTEN,
           vec, 4, &walk_end);
  if (!first.ok()) return Failed("PAGEMAP_SCAN with PM_SCAN_WP_MATCHING", first.status());
  const uintptr_t base = reinterpret_cast<uintptr_t>(p);
  // With WP_ASYNC the kernel resolves this write fault itself (a synchronous registration would
  // block here waiting for a handler, which is why OpenAsyncWpUffd must have succeeded).
  Touch(p + 2 * ps, 2);
  std::memset(vec, 0, sizeof(vec));
  absl::StatusOr<int> second =
      Scan(os, pagemap_fd, p, length, 0, PAGE_IS_WRITTEN, vec, 4, &walk_end);
  if (!second.ok()) return Failed("PAGEMAP_SCAN after the write", second.status());
  if (*second != 1 || vec[0].start != base + 2 * ps || vec[0].end != base + 3 * ps) {
    return absl::StrCat("after re-protecting 4 pages and writing page 2, PAGEMAP_SCAN reported ",
                        *second, " written region(s)",
                        *second > 0 ? absl::StrCat(", first ", Region(base, ps, vec[0])) : "",
                        "; expected exactly page 2: the kernel does not track writes");
  }
  *ok = true;
  return absl::StrCat("async WP uffd on 4 pages: PM_SCAN_WP_MATCHING re-protected them (", *first,
                      " written region(s) before), then exactly the one page written "
                      "afterwards was reported PAGE_IS_WRITTEN");
}

}  // namespace

void ProbeUserfaultfd(Os& os, std::vector<Feature>* out) {
  uint64_t mask = 0;
  bool have_mask = false;
  std::string no_uffd;  // why no userfaultfd could be opened at all

  bool user_mode_only = false;
  absl::StatusOr<int> fd = OpenUffd(os, &user_mode_only);
  if (!fd.ok()) {
    no_uffd = Failed("userfaultfd(2)", fd.status());
    Add(out, kSectionUserfaultfd, feature::kUserfaultfd, false, no_uffd);
  } else {
    ScopedFd uffd(os, *fd);
    absl::StatusOr<uffdio_api> api = UffdApi(os, uffd.get(), 0);
    if (!api.ok()) {
      no_uffd = Failed("UFFDIO_API", api.status());
      Add(out, kSectionUserfaultfd, feature::kUserfaultfd, false, no_uffd);
    } else {
      mask = api->features;
      have_mask = true;
      Add(out, kSectionUserfaultfd, feature::kUserfaultfd, true,
          absl::StrFormat("userfaultfd(2) + UFFDIO_API: api 0x%x, features 0x%x%s", api->api,
                          api->features,
                          user_mode_only ? " (only with UFFD_USER_MODE_ONLY: "
                                           "vm.unprivileged_userfaultfd=0, no CAP_SYS_PTRACE)"
                                         : ""));
    }
  }

  absl::StatusOr<int> dev = os.Open("/dev/userfaultfd", O_RDWR, 0);
  if (!dev.ok()) {
    Add(out, kSectionUserfaultfd, feature::kDevUserfaultfd, false,
        Failed("open /dev/userfaultfd", dev.status()));
  } else {
    ScopedFd dev_fd(os, *dev);
    // USERFAULTFD_IOC_NEW takes the flags by value, not through a pointer.
    absl::StatusOr<int> ufd = os.Ioctl(dev_fd.get(), USERFAULTFD_IOC_NEW,
                                       reinterpret_cast<void*>(static_cast<uintptr_t>(kUffdFlags)));
    if (!ufd.ok()) {
      Add(out, kSectionUserfaultfd, feature::kDevUserfaultfd, false,
          Failed("USERFAULTFD_IOC_NEW", ufd.status()));
    } else {
      ScopedFd uffd(os, *ufd);
      absl::StatusOr<uffdio_api> api = UffdApi(os, uffd.get(), 0);
      if (!api.ok()) {
        Add(out, kSectionUserfaultfd, feature::kDevUserfaultfd, false,
            Failed("UFFDIO_API on a /dev/userfaultfd descriptor", api.status()));
      } else {
        if (!have_mask) {
          mask = api->features;
          have_mask = true;
        }
        Add(out, kSectionUserfaultfd, feature::kDevUserfaultfd, true,
            absl::StrFormat("/dev/userfaultfd + USERFAULTFD_IOC_NEW + UFFDIO_API: features 0x%x",
                            api->features));
      }
    }
  }

  for (const UffdBit& b : kUffdBits) {
    if (!have_mask) {
      Add(out, kSectionUserfaultfd, b.name, false, absl::StrCat("no userfaultfd: ", no_uffd));
    } else if ((mask & b.bit) == 0) {
      Add(out, kSectionUserfaultfd, b.name, false,
          absl::StrCat("UFFDIO_API does not report ", b.macro, " (Linux ", b.since,
                       "+ and its config)"));
    } else if (b.bit == UFFD_FEATURE_WP_ASYNC) {
      // Reported is not enough for the flag the best tracker depends on: ask for it.
      std::string failure;
      absl::StatusOr<int> async_fd = OpenAsyncWpUffd(os, &failure);
      if (!async_fd.ok()) {
        Add(out, kSectionUserfaultfd, b.name, false,
            absl::StrCat("UFFDIO_API reports ", b.macro, " but enabling it failed: ", failure));
      } else {
        (void)os.Close(*async_fd);
        Add(out, kSectionUserfaultfd, b.name, true,
            absl::StrCat("UFFDIO_API reports ", b.macro,
                         " and accepted it with WP|WP_UNPOPULATED on a fresh uffd"));
      }
    } else {
      Add(out, kSectionUserfaultfd, b.name, true, absl::StrCat("UFFDIO_API reports ", b.macro));
    }
  }
}

void ProbePagemapScan(Os& os, std::vector<Feature>* out) {
  const size_t ps = os.PageSize();
  const size_t length = 4 * ps;
  absl::StatusOr<int> pagemap = os.Open(kPagemap, O_RDONLY, 0);
  if (!pagemap.ok()) {
    std::string why = Failed(absl::StrCat("open ", kPagemap), pagemap.status());
    Add(out, kSectionDirty, feature::kPagemapScan, false, why);
    Add(out, kSectionDirty, feature::kPagemapScanWp, false, why);
    return;
  }
  ScopedFd pagemap_fd(os, *pagemap);

  bool scan_ok = false;
  std::string reason;
  absl::StatusOr<char*> mem = MapProbePages(os, length);
  if (!mem.ok()) {
    reason = Failed("mmap probe pages", mem.status());
  } else {
    ScopedMapping mapping(os, *mem, length);
    char* p = *mem;
    const uintptr_t base = reinterpret_cast<uintptr_t>(p);
    Touch(p + ps, 1);
    page_region vec[4] = {};
    uint64_t walk_end = 0;
    absl::StatusOr<int> n =
        Scan(os, pagemap_fd.get(), p, length, 0, PAGE_IS_PRESENT, vec, 4, &walk_end);
    if (!n.ok()) {
      reason = Failed("PAGEMAP_SCAN", n.status());
      if (OsErrno(n.status()) == ENOTTY) absl::StrAppend(&reason, ": needs Linux 6.7");
    } else if (*n == 1 && vec[0].start == base + ps && vec[0].end == base + 2 * ps &&
               vec[0].categories == PAGE_IS_PRESENT && walk_end == base + length) {
      scan_ok = true;
      reason =
          "a real scan of 4 fresh pages reported exactly the one touched page as "
          "PAGE_IS_PRESENT";
    } else {
      reason = absl::StrCat("PAGEMAP_SCAN of 4 pages with page 1 touched returned ", *n,
                            " present region(s)",
                            *n > 0 ? absl::StrCat(", first ", Region(base, ps, vec[0])) : "",
                            "; expected exactly page 1");
    }
  }
  Add(out, kSectionDirty, feature::kPagemapScan, scan_ok, reason);

  if (!scan_ok) {
    Add(out, kSectionDirty, feature::kPagemapScanWp, false,
        absl::StrCat("needs pagemap_scan: ", reason));
    return;
  }
  bool wp_ok = false;
  std::string wp_reason = WpCycle(os, pagemap_fd.get(), &wp_ok);
  Add(out, kSectionDirty, feature::kPagemapScanWp, wp_ok, wp_reason);
}

void ProbeSoftDirty(Os& os, std::vector<Feature>* out) {
  const size_t ps = os.PageSize();
  auto add = [&](bool ok, std::string reason) {
    Add(out, kSectionDirty, feature::kSoftDirty, ok, std::move(reason));
  };
  absl::StatusOr<char*> mem = MapProbePages(os, ps);
  if (!mem.ok()) return add(false, Failed("mmap probe page", mem.status()));
  ScopedMapping mapping(os, *mem, ps);
  char* p = *mem;
  Touch(p, 1);

  absl::StatusOr<int> pagemap = os.Open(kPagemap, O_RDONLY, 0);
  if (!pagemap.ok()) return add(false, Failed(absl::StrCat("open ", kPagemap), pagemap.status()));
  ScopedFd pagemap_fd(os, *pagemap);
  const uint64_t entry_offset = reinterpret_cast<uintptr_t>(p) / ps * kernel::kPagemapEntrySize;
  auto read_entry = [&](uint64_t* entry) -> absl::Status {
    ASSIGN_OR_RETURN(size_t n, os.Pread(pagemap_fd.get(), entry, sizeof(*entry), entry_offset));
    if (n != sizeof(*entry)) {
      return absl::InternalError(absl::StrCat("short read of ", n, " bytes"));
    }
    return absl::OkStatus();
  };

  absl::Status s = os.WriteFile(kClearRefs, kernel::kClearRefsSoftDirty);
  if (!s.ok()) return add(false, Failed(absl::StrCat("write \"4\" to ", kClearRefs), s));
  uint64_t before = 0, after = 0;
  s = read_entry(&before);
  if (!s.ok()) return add(false, Failed(absl::StrCat("read ", kPagemap), s));
  Touch(p, 2);
  s = read_entry(&after);
  if (!s.ok()) return add(false, Failed(absl::StrCat("read ", kPagemap), s));

  const uint64_t sd = uint64_t{1} << kernel::kPagemapSoftDirtyBit;
  const uint64_t present = uint64_t{1} << kernel::kPagemapPresentBit;
  if ((after & present) == 0) {
    return add(false, absl::StrFormat("pagemap entry 0x%016x has present bit 63 clear after a "
                                      "write: pagemap is not readable here",
                                      after));
  }
  if ((before & sd) != 0) {
    return add(false,
               "pagemap bit 55 was still set right after clear_refs: the reset has no "
               "effect");
  }
  if ((after & sd) == 0) {
    return add(false,
               "kernel accepts clear_refs but pagemap bit 55 stayed 0 after a write: "
               "CONFIG_MEM_SOFT_DIRTY off");
  }
  add(true, "after clear_refs \"4\" pagemap bit 55 was 0, after one write it was 1");
}

}  // namespace procmig::probes
