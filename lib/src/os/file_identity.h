// File identity: what says that a file mapped at the source is the same file at the destination,
// beyond its size and mtime (which `touch -d` forges in a second).
//
// An ELF file is identified by its GNU build-id (the NT_GNU_BUILD_ID note of a PT_NOTE segment,
// read from the file, never from memory). Any other file, or an ELF without a build-id, by the
// crc32c of the mapped range of the file (the part of [offset, offset + length) that lies inside
// the file). ReadElfBuildId() reads only the ELF header, the program headers and the note segments
// (each bounded), so hostile or truncated files cost little and are reported, never trusted.
//
// FileIdentityCache remembers identities by (dev, inode, size, mtime, range), so the sender
// computes each at most once (at setup, or when a file mapping is first seen) and the final
// capture only looks them up (Find never reads a file). One thread at a time; plain values.
#ifndef PROCMIG_OS_FILE_IDENTITY_H_
#define PROCMIG_OS_FILE_IDENTITY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace procmig {

enum class FileIdKind : uint8_t {
  kNone = 0,     // not a file mapping, or not recorded (no up-front check asked for)
  kUnknown = 1,  // a file mapping whose identity was not computed in time: size + mtime only
  kBuildId = 2,  // id = the GNU build-id bytes
  kCrc32c = 3,   // id = crc32c (4 bytes, little-endian) of the mapped range of the file
};
inline constexpr uint8_t kMaxFileIdKind = 3;
inline constexpr size_t kMaxFileId = 64;  // build-ids are 20 bytes (sha1) or 16 (md5/uuid)

struct FileIdentity {
  FileIdKind kind = FileIdKind::kNone;
  std::string id;  // see FileIdKind
  bool operator==(const FileIdentity&) const = default;
};

// "build-id 3a4f..." / "crc32c 0x1234abcd" / "unknown": for messages.
std::string DescribeFileIdentity(const FileIdentity& id);
std::string HexBytes(std::string_view bytes);

// The build-id of the ELF file open at `fd` (`file_size` bytes). nullopt when the file is not
// ELF (no magic) or is an ELF without a build-id note; DataLoss naming what is wrong when it
// starts like an ELF but its headers or notes do not fit the file ("ELF program headers at 64 +
// 56 x 9000 run past the end of the file (4096 bytes)"); Unavailable when reading fails.
absl::StatusOr<std::optional<std::string>> ReadElfBuildId(int fd, uint64_t file_size);

// crc32c of the bytes of [offset, offset + length) that lie inside the file (`file_size` bytes).
absl::StatusOr<uint32_t> Crc32cOfRange(int fd, uint64_t file_size, uint64_t offset,
                                       uint64_t length);

// The stat fields an identity is tied to.
struct FileStamp {
  uint64_t dev = 0, inode = 0, size = 0, mtime_ns = 0;
  // Set by StatFile (0 in cache keys): `touch -d` forges an mtime, never a ctime, so a stat-only
  // re-check of a verified file compares it too.
  uint64_t ctime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};
// stat(path): Unavailable naming the path and errno on failure.
absl::StatusOr<FileStamp> StatFile(const std::string& path);

// Opens `path`, checks it still has `expect`'s inode, size and mtime (FailedPrecondition
// otherwise: the file changed since it was stamped) and computes its identity for the mapped range: the build-id
// when it is an ELF with one, else the crc32c of the range. A malformed ELF falls back to the
// crc32c; `elf_problem`, when given, receives the reader's DataLoss message then.
absl::StatusOr<FileIdentity> ComputeFileIdentity(const std::string& path, const FileStamp& expect,
                                                 uint64_t offset, uint64_t length,
                                                 std::string* elf_problem = nullptr);

class FileIdentityCache {
 public:
  // The cached identity, or nullopt. Never reads a file.
  std::optional<FileIdentity> Find(const FileStamp& stamp, uint64_t offset,
                                   uint64_t length) const;
  // Find, else compute (ComputeFileIdentity) and remember. A file whose identity cannot be
  // computed (gone, changed since `stamp`, unreadable) is remembered as kUnknown, so it is not
  // read again at every iteration.
  FileIdentity Get(const std::string& path, const FileStamp& stamp, uint64_t offset,
                   uint64_t length);
  size_t size() const { return by_file_.size() + by_range_.size(); }
  uint64_t computed() const { return computed_; }

 private:
  struct RangeKey {
    FileStamp stamp;
    uint64_t offset = 0, length = 0;
    bool operator==(const RangeKey&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const RangeKey& k) {
      return H::combine(std::move(h), k.stamp.dev, k.stamp.inode, k.stamp.size, k.stamp.mtime_ns,
                        k.offset, k.length);
    }
  };
  // ELF files with a build-id: one entry per file, whatever range.
  absl::flat_hash_map<RangeKey, FileIdentity> by_file_;
  absl::flat_hash_map<RangeKey, FileIdentity> by_range_;
  uint64_t computed_ = 0;
};

}  // namespace procmig

#endif  // PROCMIG_OS_FILE_IDENTITY_H_
