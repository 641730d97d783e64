// RestoreCheckRecord: what a receiver needs to decide, before any memory is sent, whether it can
// restore the process (wire record restore_check, sent right after the preamble): the CPU
// features the source used, its vDSO's identity, and the identity of every file it maps.
//
// BuildRestoreCheck() derives it from a ProcessStateRecord (one entry per file and identity:
// an ELF with a build-id once, a crc32c per mapped range), so the up-front check and the end of
// stream check read the same facts.
//
// It also lists where each file is mapped (the VMAs, in address order), so a live receiver can
// map them at their final addresses while the memory streams (restore/file_premaps.h).
//
// Encoding, version 1 (little-endian, field by field):
//   record := magic:u32 ("PMRC" = 0x43524d50) version:u16 reserved:u16 body
//   body   := pid:u32 reserved:u32 cpu vdso u32 n file[n] u32 m map[m]
//   cpu    := 6 x u32, 2 x u64 (CpuFeatures order)
//   vdso   := vdso_start vdso_end vvar_start vvar_end:u64 crc:u32
//   file   := dev_major dev_minor:u32 inode size mtime_ns offset length:u64 flags:u8 id_kind:u8
//             id_len:u8 reserved:u8 id[id_len] path:str
//   str    := len:u32 bytes[len]   (1 <= len <= kMaxPath, starts with '/')
//   map    := start end offset:u64 prot:u8 shared:u8 reserved:u16 file:u32
//             (page-aligned, start < end, sorted and disjoint; prot <= 7; file < n)
// flags: bit 0 kFileRequired (some mapping of the file has no RAM block: its pages come from the
// file). id_kind/id as FileIdKind (os/file_identity.h): build-id entries have offset = length
// = 0 (the whole file), crc32c entries the mapped range, unknown entries 0/0 and no id.
// Counts are bounded (kMaxCheckFiles) before anything is allocated; unknown flags, kinds,
// non-zero reserved fields and trailing bytes are DataLoss naming the field.
//
// Threads: plain values and pure functions.
#ifndef PROCMIG_MIGRATION_RESTORE_CHECK_H_
#define PROCMIG_MIGRATION_RESTORE_CHECK_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/process_state.h"
#include "os/file_identity.h"

namespace procmig {

inline constexpr uint32_t kRestoreCheckMagic = 0x43524d50;  // "PMRC"
inline constexpr uint16_t kRestoreCheckVersion = 1;
inline constexpr size_t kMaxCheckFiles = 1 << 16;
inline constexpr uint8_t kFileRequired = 0x01;

struct FileCheck {
  std::string path;
  uint32_t dev_major = 0, dev_minor = 0;  // at the source (informational across hosts)
  uint64_t inode = 0;
  uint64_t size = 0, mtime_ns = 0;
  uint64_t offset = 0, length = 0;  // the range a crc32c covers; 0/0 otherwise
  uint8_t flags = 0;
  FileIdentity id;
  bool operator==(const FileCheck&) const = default;
};

inline constexpr size_t kMaxCheckMaps = 1 << 20;

// One mapping of files[file].
struct FileMapping {
  uint64_t start = 0, end = 0, offset = 0;
  uint8_t prot = 0;
  bool shared = false;
  uint32_t file = 0;
  bool operator==(const FileMapping&) const = default;
};

struct RestoreCheckRecord {
  uint32_t pid = 0;
  CpuFeatures cpu;
  VdsoIdentity vdso;
  std::vector<FileCheck> files;
  std::vector<FileMapping> maps;
  bool operator==(const RestoreCheckRecord&) const = default;
};

// The files the process maps from disk (absolute path, not deleted), one entry per distinct
// identity, in VMA order. A file the source could not stat as the one mapped (replaced on disk)
// has size and mtime 0. Identities are copied as they
// are: a record whose VMAs carry none (kNone, no up-front check) gives entries that
// EncodeRestoreCheck refuses; the sender identifies every such VMA first.
RestoreCheckRecord BuildRestoreCheck(const ProcessStateRecord& state);

size_t EncodedSize(const RestoreCheckRecord& r);
// InvalidArgument when a count, path or identity breaks the format's rules.
absl::Status EncodeRestoreCheck(const RestoreCheckRecord& r, std::string* out);
absl::StatusOr<RestoreCheckRecord> DecodeRestoreCheck(std::span<const uint8_t> in);

}  // namespace procmig

#endif  // PROCMIG_MIGRATION_RESTORE_CHECK_H_
