// Kernel ABI constants and structs newer than the installed kernel headers (Debian 12: 6.1).
//
// This is the one compat header of procmig (STYLE.md): every module that needs a kernel
// interface newer than /usr/include/linux includes "os/kernel_compat.h" instead of defining its
// own copy. Each item is guarded by #ifndef so that newer installed headers win silently; the
// values were copied by hand from the kernel's uapi headers (include/uapi/linux/fs.h,
// userfaultfd.h, prctl.h, asm-generic/mman-common.h, Documentation/admin-guide/mm/pagemap.rst)
// and are checked against the running kernel by the os unit tests where the kernel exposes them.
//
// Header-only, no state; any thread may use it. It includes the 6.1 uapi headers it extends, so
// callers get one consistent view (the trackers and the restorer are the includers of
// <linux/userfaultfd.h> per STYLE.md, through this file).
//
// Already present in the 6.1 headers and therefore not repeated here: struct clone_args with
// set_tid/set_tid_size (5.5) and CLONE_ARGS_SIZE_VER0..2, USERFAULTFD_IOC_NEW (/dev/userfaultfd,
// 6.1), UFFD_USER_MODE_ONLY, UFFDIO_WRITEPROTECT/CONTINUE, every io_uring opcode procmig uses
// (READV..SENDMSG_ZC are all <= 48 and in the 6.1 enum), IORING_REGISTER_PROBE, PR_SET_MM_MAP and
// struct prctl_mm_map, PR_SET_VMA_ANON_NAME, MADV_COLLAPSE, MAP_FIXED_NOREPLACE.
#ifndef PROCMIG_OS_KERNEL_COMPAT_H_
#define PROCMIG_OS_KERNEL_COMPAT_H_

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>

#include <cstdint>

// ---------------------------------------------------------------------------------------------
// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h): one ioctl on /proc/PID/pagemap that
// reports page categories for a range and, with PM_SCAN_WP_MATCHING, re-write-protects the
// matched pages of a uffd WP_ASYNC registration in the same pass.
#ifndef PAGEMAP_SCAN

struct page_region {
  __u64 start;
  __u64 end;  // exclusive
  __u64 categories;
};

struct pm_scan_arg {
  __u64 size;  // sizeof(struct pm_scan_arg)
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;  // written by the kernel: where the walk stopped
  __u64 vec;       // user address of struct page_region[vec_len]
  __u64 vec_len;
  __u64 max_pages;  // 0 = no limit
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif  // PAGEMAP_SCAN

#ifndef PAGE_IS_WPALLOWED
#define PAGE_IS_WPALLOWED (1 << 0)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef PAGE_IS_FILE
#define PAGE_IS_FILE (1 << 2)
#endif
#ifndef PAGE_IS_PRESENT
#define PAGE_IS_PRESENT (1 << 3)
#endif
#ifndef PAGE_IS_SWAPPED
#define PAGE_IS_SWAPPED (1 << 4)
#endif
#ifndef PAGE_IS_PFNZERO
#define PAGE_IS_PFNZERO (1 << 5)
#endif
#ifndef PAGE_IS_HUGE
#define PAGE_IS_HUGE (1 << 6)
#endif
#ifndef PAGE_IS_SOFT_DIRTY
#define PAGE_IS_SOFT_DIRTY (1 << 7)
#endif
#ifndef PAGE_IS_GUARD  // Linux 6.15
#define PAGE_IS_GUARD (1 << 8)
#endif

#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)  // write-protect the pages matched
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1 << 1)  // abort on a page that is not in a WP_ASYNC range
#endif

// ---------------------------------------------------------------------------------------------
// userfaultfd (include/uapi/linux/userfaultfd.h). 6.1 stops at WP_HUGETLBFS_SHMEM (bit 12).
#ifndef UFFD_FEATURE_WP_UNPOPULATED  // Linux 6.4: WP applies to empty ptes of anon memory
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON  // Linux 6.6: UFFDIO_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC  // Linux 6.7: the kernel resolves WP faults itself
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE  // Linux 6.8: UFFDIO_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif

#ifndef UFFDIO_MOVE
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;  // UFFDIO_MOVE_MODE_*
  __s64 move;  // written by the kernel: bytes moved or -errno
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef UFFDIO_MOVE_MODE_DONTWAKE
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#endif
#ifndef UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
#endif

#ifndef UFFDIO_POISON
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;     // UFFDIO_POISON_MODE_*
  __s64 updated;  // written by the kernel
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFDIO_POISON_MODE_DONTWAKE
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
#endif

// ---------------------------------------------------------------------------------------------
// prctl (include/uapi/linux/prctl.h) options added after 6.1.
#ifndef PR_SET_MDWE  // Linux 6.3: memory-deny-write-execute
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN (1UL << 0)
#endif
#ifndef PR_MDWE_NO_INHERIT
#define PR_MDWE_NO_INHERIT (1UL << 1)
#endif
#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#ifndef PR_SET_MEMORY_MERGE  // Linux 6.4: KSM for the whole process
#define PR_SET_MEMORY_MERGE 67
#endif
#ifndef PR_GET_MEMORY_MERGE
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef PR_GET_AUXV  // Linux 6.4: copy of the saved auxv (what PR_SET_MM_MAP restores)
#define PR_GET_AUXV 0x41555856
#endif
#ifndef PR_GET_SHADOW_STACK_STATUS  // Linux 6.13 (arm64 GCS; x86 uses arch_prctl ARCH_SHSTK_*)
#define PR_GET_SHADOW_STACK_STATUS 74
#endif
#ifndef PR_SET_SHADOW_STACK_STATUS
#define PR_SET_SHADOW_STACK_STATUS 75
#endif
#ifndef PR_SHADOW_STACK_ENABLE
#define PR_SHADOW_STACK_ENABLE (1UL << 0)
#endif
#ifndef PR_SHADOW_STACK_WRITE
#define PR_SHADOW_STACK_WRITE (1UL << 1)
#endif
#ifndef PR_SHADOW_STACK_PUSH
#define PR_SHADOW_STACK_PUSH (1UL << 2)
#endif
#ifndef PR_LOCK_SHADOW_STACK_STATUS
#define PR_LOCK_SHADOW_STACK_STATUS 76
#endif

// ---------------------------------------------------------------------------------------------
// madvise (include/uapi/asm-generic/mman-common.h).
#ifndef MADV_GUARD_INSTALL  // Linux 6.13: lightweight guard pages inside a VMA
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_GUARD_REMOVE
#define MADV_GUARD_REMOVE 103
#endif

// ---------------------------------------------------------------------------------------------
// clone3 set_tid (include/uapi/linux/sched.h). struct clone_args is in the 6.1 header; the size
// constants are repeated here only so that code compiled against older headers still builds.
#ifndef CLONE_ARGS_SIZE_VER1  // first version with set_tid/set_tid_size (Linux 5.5)
#define CLONE_ARGS_SIZE_VER1 80
#endif
#ifndef CLONE_ARGS_SIZE_VER2  // adds cgroup (Linux 5.7)
#define CLONE_ARGS_SIZE_VER2 88
#endif

namespace procmig::kernel {

// /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). These are kernel ABI
// but live in no uapi header, so they are defined here once.
inline constexpr uint64_t kPagemapPfnMask = (uint64_t{1} << 55) - 1;  // bits 0-54
inline constexpr int kPagemapSoftDirtyBit = 55;
inline constexpr int kPagemapExclusiveBit = 56;  // since 4.2
inline constexpr int kPagemapUffdWpBit = 57;     // since 5.13
inline constexpr int kPagemapGuardBit = 58;      // since 6.15
inline constexpr int kPagemapFileBit = 61;       // file page or shared anon, since 3.5
inline constexpr int kPagemapSwappedBit = 62;
inline constexpr int kPagemapPresentBit = 63;
inline constexpr size_t kPagemapEntrySize = 8;

// /proc/PID/clear_refs command that resets the soft-dirty bits of the whole process.
inline constexpr char kClearRefsSoftDirty[] = "4";

}  // namespace procmig::kernel

#endif  // PROCMIG_OS_KERNEL_COMPAT_H_
