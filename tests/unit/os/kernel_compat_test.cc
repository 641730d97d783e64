// kernel_compat.h: the values copied from the kernel's uapi headers, checked twice: against the
// numbers of the uapi headers (static_asserts: layout and ioctl encodings), and against the
// running kernel's behaviour where it has the feature (a value that compiles but means
// something else to the kernel fails here).
#include "os/kernel_compat.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace procmig {
namespace {

// Layout and encodings, from include/uapi/linux/fs.h and userfaultfd.h (x86_64).
static_assert(sizeof(page_region) == 24);
static_assert(sizeof(pm_scan_arg) == 96);
static_assert(offsetof(pm_scan_arg, walk_end) == 32);
static_assert(offsetof(pm_scan_arg, return_mask) == 88);
static_assert(PAGEMAP_SCAN == 0xc0606610);  // _IOWR('f', 16, 96 bytes)
static_assert(sizeof(uffdio_move) == 40);
static_assert(UFFDIO_MOVE == 0xc028aa05);  // _IOWR(0xAA, 0x05, 40 bytes)
static_assert(UFFDIO_POISON == 0xc020aa08);
static_assert(UFFD_FEATURE_WP_UNPOPULATED == 0x2000);
static_assert(UFFD_FEATURE_POISON == 0x4000);
static_assert(UFFD_FEATURE_WP_ASYNC == 0x8000);
static_assert(UFFD_FEATURE_MOVE == 0x10000);
static_assert(PAGE_IS_WPALLOWED == 1 && PAGE_IS_WRITTEN == 2 && PAGE_IS_FILE == 4 &&
              PAGE_IS_PRESENT == 8 && PAGE_IS_SWAPPED == 16 && PAGE_IS_PFNZERO == 32 &&
              PAGE_IS_HUGE == 64 && PAGE_IS_SOFT_DIRTY == 128 && PAGE_IS_GUARD == 256);
static_assert(PM_SCAN_WP_MATCHING == 1 && PM_SCAN_CHECK_WPASYNC == 2);
static_assert(PR_SET_MDWE == 65 && PR_GET_MDWE == 66 && PR_SET_MEMORY_MERGE == 67 &&
              PR_GET_MEMORY_MERGE == 68 && PR_GET_AUXV == 0x41555856);
static_assert(PR_GET_SHADOW_STACK_STATUS == 74 && PR_SET_SHADOW_STACK_STATUS == 75 &&
              PR_LOCK_SHADOW_STACK_STATUS == 76);
static_assert(MADV_GUARD_INSTALL == 102 && MADV_GUARD_REMOVE == 103);
static_assert(CLONE_ARGS_SIZE_VER1 == offsetof(clone_args, cgroup));
static_assert(CLONE_ARGS_SIZE_VER2 == sizeof(clone_args));

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

uint64_t PagemapEntry(const void* addr) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  uint64_t entry = 0;
  REQUIRE(pread(fd, &entry, 8, reinterpret_cast<uintptr_t>(addr) / kPage * 8) == 8);
  close(fd);
  return entry;
}

bool Bit(uint64_t entry, int bit) { return (entry >> bit) & 1; }

// Returns the categories PAGEMAP_SCAN reports for one page, or -errno.
int64_t Categories(void* page, uint64_t mask) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  page_region vec[1] = {};
  pm_scan_arg arg = {};
  arg.size = sizeof(arg);
  arg.start = reinterpret_cast<uintptr_t>(page);
  arg.end = arg.start + kPage;
  arg.vec = reinterpret_cast<uintptr_t>(vec);
  arg.vec_len = 1;
  arg.category_anyof_mask = mask;
  arg.return_mask = mask;
  int n = ioctl(fd, PAGEMAP_SCAN, &arg);
  int err = errno;
  close(fd);
  if (n < 0) return -err;
  return n == 0 ? 0 : static_cast<int64_t>(vec[0].categories);
}

TEST_CASE("pagemap bits: present, exclusive and file mean what kernel_compat.h says") {
  char* anon = static_cast<char*>(
      mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(anon != MAP_FAILED);
  CHECK_FALSE(Bit(PagemapEntry(anon), kernel::kPagemapPresentBit));
  anon[0] = 1;
  uint64_t e = PagemapEntry(anon);
  CHECK(Bit(e, kernel::kPagemapPresentBit));
  CHECK(Bit(e, kernel::kPagemapExclusiveBit));
  CHECK_FALSE(Bit(e, kernel::kPagemapFileBit));
  CHECK_FALSE(Bit(e, kernel::kPagemapSwappedBit));

  int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const char* file = static_cast<const char*>(mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE, fd, 0));
  REQUIRE(file != MAP_FAILED);
  close(fd);
  CHECK(file[1] == 'E');  // ELF magic; also faults the page in
  uint64_t f = PagemapEntry(file);
  CHECK(Bit(f, kernel::kPagemapPresentBit));
  CHECK(Bit(f, kernel::kPagemapFileBit));

  // PAGE_IS_* categories, where the kernel has PAGEMAP_SCAN.
  int64_t anon_cat = Categories(anon, PAGE_IS_PRESENT | PAGE_IS_FILE | PAGE_IS_PFNZERO);
  if (anon_cat == -ENOTTY || anon_cat == -EINVAL) {
    MESSAGE("no PAGEMAP_SCAN on this kernel: category values not checked");
  } else {
    CHECK(anon_cat == PAGE_IS_PRESENT);
    CHECK(Categories(const_cast<char*>(file), PAGE_IS_PRESENT | PAGE_IS_FILE | PAGE_IS_PFNZERO) ==
          (PAGE_IS_PRESENT | PAGE_IS_FILE));
    // PAGE_IS_PFNZERO is not checked: this machine's kernel (a Firecracker guest) gives read
    // faults on anonymous memory a real page instead of the shared zero page.
  }
  munmap(anon, kPage);
  munmap(const_cast<char*>(file), kPage);
}

int OpenUffd(uint64_t features) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return -1;
  uffdio_api api = {};
  api.api = UFFD_API;
  api.features = features;
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_CASE("WP_ASYNC, PM_SCAN_WP_MATCHING and pagemap bit 57 agree with the kernel") {
  int uffd = OpenUffd(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED |
                      UFFD_FEATURE_WP_ASYNC);
  if (uffd < 0) {
    MESSAGE("no userfaultfd with WP_ASYNC on this kernel: skipped");
    return;
  }
  char* p = static_cast<char*>(
      mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(p != MAP_FAILED);
  p[0] = 1;
  uffdio_register reg = {};
  reg.range.start = reinterpret_cast<uintptr_t>(p);
  reg.range.len = kPage;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  REQUIRE(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0);

  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(pm >= 0);
  page_region vec[1] = {};
  pm_scan_arg arg = {};
  arg.size = sizeof(arg);
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = reinterpret_cast<uintptr_t>(p);
  arg.end = arg.start + kPage;
  arg.vec = reinterpret_cast<uintptr_t>(vec);
  arg.vec_len = 1;
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  REQUIRE(ioctl(pm, PAGEMAP_SCAN, &arg) == 1);
  CHECK(arg.walk_end == arg.end);
  CHECK(Bit(PagemapEntry(p), kernel::kPagemapUffdWpBit));  // protected now
  p[0] = 2;                                                // resolved by the kernel (async)
  CHECK_FALSE(Bit(PagemapEntry(p), kernel::kPagemapUffdWpBit));
  arg.flags = 0;
  CHECK(ioctl(pm, PAGEMAP_SCAN, &arg) == 1);
  CHECK(vec[0].categories == PAGE_IS_WRITTEN);
  close(pm);
  close(uffd);
  munmap(p, kPage);
}

TEST_CASE("UFFDIO_MOVE moves a page with the struct layout of kernel_compat.h") {
  int uffd = OpenUffd(UFFD_FEATURE_MOVE);
  if (uffd < 0) {
    MESSAGE("no UFFD_FEATURE_MOVE on this kernel: skipped");
    return;
  }
  char* src = static_cast<char*>(
      mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  char* dst = static_cast<char*>(
      mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(src != MAP_FAILED);
  REQUIRE(dst != MAP_FAILED);
  std::memset(src, 0x5a, kPage);
  uffdio_register reg = {};
  reg.range.start = reinterpret_cast<uintptr_t>(dst);
  reg.range.len = kPage;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  REQUIRE(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0);
  uffdio_move move = {};
  move.dst = reinterpret_cast<uintptr_t>(dst);
  move.src = reinterpret_cast<uintptr_t>(src);
  move.len = kPage;
  move.mode = 0;
  REQUIRE(ioctl(uffd, UFFDIO_MOVE, &move) == 0);
  CHECK(move.move == static_cast<int64_t>(kPage));
  CHECK(dst[0] == 0x5a);
  CHECK(dst[kPage - 1] == 0x5a);
  CHECK_FALSE(Bit(PagemapEntry(src), kernel::kPagemapPresentBit));  // the page left src
  close(uffd);
  munmap(src, kPage);
  munmap(dst, kPage);
}

TEST_CASE("PR_GET_MDWE and PR_GET_MEMORY_MERGE are the kernel's numbers") {
  // On kernels that have them these return the current (zero) state; an unknown option would
  // be EINVAL.
  long mdwe = syscall(SYS_prctl, PR_GET_MDWE, 0, 0, 0, 0);
  if (mdwe < 0 && errno == EINVAL) {
    MESSAGE("PR_GET_MDWE unknown to this kernel (< 6.3)");
  } else {
    CHECK(mdwe == 0);
  }
  long merge = syscall(SYS_prctl, PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
  if (merge < 0 && errno == EINVAL) {
    MESSAGE("PR_GET_MEMORY_MERGE unknown to this kernel (< 6.4 or no KSM)");
  } else {
    CHECK(merge == 0);
  }
}

}  // namespace
}  // namespace procmig
