#include "os/file_identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/coding.h"
#include "base/crc32c.h"
#include "base/status_macros.h"

namespace procmig {

namespace {

constexpr uint32_t kPtNote = 4;
constexpr uint32_t kNtGnuBuildId = 3;
constexpr uint64_t kMaxNoteSegment = 1u << 20;

// Reads exactly n bytes at `offset`; Unavailable on an error, DataLoss when the file ends first.
absl::Status PreadExact(int fd, void* buf, size_t n, uint64_t offset) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(absl::StatusCode::kUnavailable, "read", errno);
    if (r == 0) {
      return absl::DataLossError(absl::StrCat("the file ends at ", offset, " (shrank?)"));
    }
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

uint64_t Align(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// Scans one note segment for NT_GNU_BUILD_ID / "GNU".
absl::StatusOr<std::optional<std::string>> ScanNotes(const uint8_t* p, size_t n, uint64_t align,
                                                     uint64_t seg_offset) {
  size_t pos = 0;
  while (n - pos >= 12) {
    const uint64_t namesz = DecodeFixed32(p + pos);
    const uint64_t descsz = DecodeFixed32(p + pos + 4);
    const uint32_t type = DecodeFixed32(p + pos + 8);
    const uint64_t name_at = pos + 12;
    // gABI: the descriptor starts at the next `align` boundary after the name (for 8-byte
    // aligned notes such as .note.gnu.property that is not name_at + Align(namesz, 8)).
    const uint64_t desc_at = Align(name_at + namesz, align);
    const uint64_t next = Align(desc_at + descsz, align);
    if (desc_at + descsz > n || next < desc_at) {
      return absl::DataLossError(absl::StrFormat(
          "ELF note at %d (name %d bytes, desc %d bytes) runs past its segment (%d bytes at %d)",
          pos, namesz, descsz, n, seg_offset));
    }
    if (type == kNtGnuBuildId && namesz == 4 && std::memcmp(p + name_at, "GNU", 4) == 0) {
      if (descsz == 0 || descsz > kMaxFileId) {
        return absl::DataLossError(
            absl::StrCat("ELF build-id note holds ", descsz, " bytes (want 1..", kMaxFileId, ")"));
      }
      return std::optional<std::string>(
          std::string(reinterpret_cast<const char*>(p + desc_at), descsz));
    }
    if (next >= n) break;
    pos = static_cast<size_t>(next);
  }
  return std::optional<std::string>();
}

}  // namespace

std::string HexBytes(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (char c : bytes) {
    auto b = static_cast<uint8_t>(c);
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

std::string DescribeFileIdentity(const FileIdentity& id) {
  switch (id.kind) {
    case FileIdKind::kNone:
      return "none";
    case FileIdKind::kUnknown:
      return "unknown";
    case FileIdKind::kBuildId:
      return absl::StrCat("build-id ", HexBytes(id.id));
    case FileIdKind::kCrc32c:
      if (id.id.size() == 4) {
        return absl::StrFormat(
            "crc32c 0x%08x", DecodeFixed32(reinterpret_cast<const uint8_t*>(id.id.data())));
      }
      return absl::StrCat("crc32c ", HexBytes(id.id));
  }
  return "?";
}

absl::StatusOr<std::optional<std::string>> ReadElfBuildId(int fd, uint64_t file_size) {
  uint8_t eh[64] = {};
  if (file_size < 4) return std::optional<std::string>();
  RETURN_IF_ERROR(PreadExact(fd, eh, std::min<uint64_t>(file_size, sizeof eh), 0));
  if (std::memcmp(eh, "\x7f" "ELF", 4) != 0) return std::optional<std::string>();
  if (file_size < 16) {
    return absl::DataLossError(absl::StrCat("ELF identification truncated (", file_size, " bytes)"));
  }
  const uint8_t cls = eh[4], data = eh[5];
  if (cls != 1 && cls != 2) return absl::DataLossError(absl::StrCat("unknown ELF class ", cls));
  if (data != 1) return std::optional<std::string>();  // big-endian: not ours, hashed instead
  const bool is64 = cls == 2;
  const uint64_t ehsize = is64 ? 64 : 52;
  if (file_size < ehsize) {
    return absl::DataLossError(
        absl::StrCat("ELF header truncated (", file_size, " bytes, want ", ehsize, ")"));
  }
  const uint64_t phoff = is64 ? DecodeFixed64(eh + 32) : DecodeFixed32(eh + 28);
  const uint64_t phentsize = DecodeFixed16(eh + (is64 ? 54 : 42));
  const uint64_t phnum = DecodeFixed16(eh + (is64 ? 56 : 44));
  if (phnum == 0) return std::optional<std::string>();
  const uint64_t min_ent = is64 ? 56 : 32;
  if (phentsize < min_ent) {
    return absl::DataLossError(
        absl::StrCat("ELF program header entries of ", phentsize, " bytes (want >= ", min_ent, ")"));
  }
  const uint64_t table = phentsize * phnum;  // both < 2^16: no overflow
  if (phoff > file_size || table > file_size - phoff) {
    return absl::DataLossError(
        absl::StrCat("ELF program headers at ", phoff, " + ", phentsize, " x ", phnum,
                     " run past the end of the file (", file_size, " bytes)"));
  }
  std::vector<uint8_t> ph(table);
  RETURN_IF_ERROR(PreadExact(fd, ph.data(), ph.size(), phoff));
  std::vector<uint8_t> note;
  for (uint64_t i = 0; i < phnum; ++i) {
    const uint8_t* e = ph.data() + i * phentsize;
    if (DecodeFixed32(e) != kPtNote) continue;
    const uint64_t off = is64 ? DecodeFixed64(e + 8) : DecodeFixed32(e + 4);
    const uint64_t size = is64 ? DecodeFixed64(e + 32) : DecodeFixed32(e + 16);
    const uint64_t palign = is64 ? DecodeFixed64(e + 48) : DecodeFixed32(e + 28);
    if (off > file_size || size > file_size - off) {
      return absl::DataLossError(absl::StrCat("ELF note segment at ", off, " (", size,
                                              " bytes) runs past the end of the file (",
                                              file_size, " bytes)"));
    }
    if (size > kMaxNoteSegment) {
      return absl::DataLossError(absl::StrCat("ELF note segment of ", size, " bytes (more than ",
                                              kMaxNoteSegment, ")"));
    }
    note.resize(size);
    RETURN_IF_ERROR(PreadExact(fd, note.data(), note.size(), off));
    ASSIGN_OR_RETURN(std::optional<std::string> id,
                     ScanNotes(note.data(), note.size(), palign == 8 ? 8 : 4, off));
    if (id.has_value()) return id;
  }
  return std::optional<std::string>();
}

absl::StatusOr<uint32_t> Crc32cOfRange(int fd, uint64_t file_size, uint64_t offset,
                                       uint64_t length) {
  if (offset >= file_size) return 0u;
  uint64_t left = std::min(length, file_size - offset);
  constexpr size_t kChunk = 1u << 20;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  uint32_t crc = 0;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kChunk));
    RETURN_IF_ERROR(PreadExact(fd, buf.get(), n, offset));
    crc = crc32c::Extend(crc, buf.get(), n);
    offset += n;
    left -= n;
  }
  return crc;
}

absl::StatusOr<FileStamp> StatFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return ErrnoStatus(absl::StatusCode::kUnavailable, path, errno);
  }
  FileStamp s;
  s.dev = st.st_dev;
  s.inode = st.st_ino;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull +
               static_cast<uint64_t>(st.st_mtim.tv_nsec);
  s.ctime_ns = static_cast<uint64_t>(st.st_ctim.tv_sec) * 1'000'000'000ull +
               static_cast<uint64_t>(st.st_ctim.tv_nsec);
  return s;
}

absl::StatusOr<FileIdentity> ComputeFileIdentity(const std::string& path, const FileStamp& expect,
                                                 uint64_t offset, uint64_t length,
                                                 std::string* elf_problem) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return ErrnoStatus(absl::StatusCode::kUnavailable, absl::StrCat("open ", path), errno);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return ErrnoStatus(absl::StatusCode::kUnavailable, absl::StrCat("fstat ", path), errno);
  }
  FileStamp now;
  now.dev = st.st_dev;
  now.inode = st.st_ino;
  now.size = static_cast<uint64_t>(st.st_size);
  now.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ull +
                 static_cast<uint64_t>(st.st_mtim.tv_nsec);
  // dev is not compared: /proc/PID/maps names the device of the inode as the kernel sees it,
  // which differs from st_dev on overlay and btrfs subvolumes.
  if (now.inode != expect.inode || now.size != expect.size || now.mtime_ns != expect.mtime_ns) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": changed since it was stat'ed"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  FileIdentity id;
  absl::StatusOr<std::optional<std::string>> build_id = ReadElfBuildId(fd, now.size);
  if (build_id.ok() && build_id->has_value()) {
    id.kind = FileIdKind::kBuildId;
    id.id = **build_id;
    return id;
  }
  if (!build_id.ok()) {
    if (!absl::IsDataLoss(build_id.status())) {
      return absl::Status(build_id.status().code(),
                          absl::StrCat(path, ": ", build_id.status().message()));
    }
    if (elf_problem != nullptr) *elf_problem = std::string(build_id.status().message());
  }
  absl::StatusOr<uint32_t> crc = Crc32cOfRange(fd, now.size, offset, length);
  if (!crc.ok()) {
    return absl::Status(crc.status().code(), absl::StrCat(path, ": ", crc.status().message()));
  }
  id.kind = FileIdKind::kCrc32c;
  id.id.resize(4);
  EncodeFixed32(reinterpret_cast<uint8_t*>(id.id.data()), *crc);
  return id;
}

std::optional<FileIdentity> FileIdentityCache::Find(const FileStamp& stamp, uint64_t offset,
                                                    uint64_t length) const {
  if (auto it = by_file_.find(RangeKey{stamp, 0, 0}); it != by_file_.end()) return it->second;
  if (auto it = by_range_.find(RangeKey{stamp, offset, length}); it != by_range_.end()) {
    return it->second;
  }
  return std::nullopt;
}

FileIdentity FileIdentityCache::Get(const std::string& path, const FileStamp& stamp,
                                    uint64_t offset, uint64_t length) {
  if (std::optional<FileIdentity> hit = Find(stamp, offset, length)) return *hit;
  ++computed_;
  absl::StatusOr<FileIdentity> id = ComputeFileIdentity(path, stamp, offset, length);
  FileIdentity out;
  out.kind = FileIdKind::kUnknown;
  if (id.ok()) out = *id;
  if (out.kind == FileIdKind::kBuildId) {
    by_file_[RangeKey{stamp, 0, 0}] = out;
  } else {
    by_range_[RangeKey{stamp, offset, length}] = out;
  }
  return out;
}

}  // namespace procmig
