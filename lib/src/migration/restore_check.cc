#include "migration/restore_check.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/coding.h"

namespace procmig {

namespace {

constexpr size_t kHeaderSize = 8;
constexpr size_t kFileFixed = 2 * 4 + 5 * 8 + 4;  // + id + path
constexpr size_t kMapSize = 3 * 8 + 4 + 4;
constexpr uint64_t kMapAlign = 4096;

bool ValidMap(const FileMapping& m, const FileMapping* prev, size_t nfiles) {
  return m.start < m.end && m.start % kMapAlign == 0 && m.end % kMapAlign == 0 &&
         m.offset % kMapAlign == 0 && m.prot <= 7 && m.file < nfiles &&
         (prev == nullptr || m.start >= prev->end);
}

absl::Status Bad(const char* field) {
  return absl::DataLossError(absl::StrCat("decode restore check: bad ", field));
}

bool ValidPath(std::string_view p) { return !p.empty() && p.size() <= kMaxPath && p[0] == '/'; }

bool ValidEntry(const FileCheck& f) {
  if (!ValidPath(f.path) || (f.flags & ~kFileRequired) != 0 || !ValidFileIdentity(f.id)) {
    return false;
  }
  if (f.id.kind == FileIdKind::kNone) return false;  // an entry always says what it knows
  if (f.id.kind != FileIdKind::kCrc32c && (f.offset != 0 || f.length != 0)) return false;
  return true;
}

}  // namespace

RestoreCheckRecord BuildRestoreCheck(const ProcessStateRecord& state) {
  RestoreCheckRecord r;
  r.pid = state.pid;
  r.cpu = state.cpu;
  r.vdso = state.vdso;
  for (const VmaRecord& v : state.vmas) {
    if (v.kind != VmaKind::kFile || v.deleted || !ValidPath(v.path)) continue;
    FileCheck f;
    f.path = v.path;
    f.dev_major = v.dev_major;
    f.dev_minor = v.dev_minor;
    f.inode = v.inode;
    f.size = v.file_size;
    f.mtime_ns = v.mtime_ns;
    f.id = v.id;
    if (f.id.kind == FileIdKind::kCrc32c) {
      f.offset = v.offset;
      f.length = v.end - v.start;
    }
    const uint8_t required = v.block_id == 0 ? kFileRequired : 0;
    FileMapping m{v.start, v.end, v.offset, v.prot, v.shared, 0};
    bool merged = false;
    for (size_t i = 0; i < r.files.size(); ++i) {
      FileCheck& g = r.files[i];
      if (g.path == f.path && g.inode == f.inode && g.size == f.size &&
          g.mtime_ns == f.mtime_ns && g.offset == f.offset && g.length == f.length &&
          g.id == f.id) {
        g.flags |= required;
        m.file = static_cast<uint32_t>(i);
        merged = true;
        break;
      }
    }
    if (!merged) {
      f.flags = required;
      m.file = static_cast<uint32_t>(r.files.size());
      r.files.push_back(std::move(f));
    }
    r.maps.push_back(m);
  }
  std::sort(r.maps.begin(), r.maps.end(),
            [](const FileMapping& a, const FileMapping& b) { return a.start < b.start; });
  return r;
}

size_t EncodedSize(const RestoreCheckRecord& r) {
  size_t n = kHeaderSize + 8 + kCpuVdsoSize + 4;
  for (const FileCheck& f : r.files) n += kFileFixed + f.id.id.size() + 4 + f.path.size();
  return n + 4 + r.maps.size() * kMapSize;
}

absl::Status EncodeRestoreCheck(const RestoreCheckRecord& r, std::string* out) {
  if (r.files.size() > kMaxCheckFiles) {
    return absl::InvalidArgumentError("encode restore check: too many files");
  }
  for (const FileCheck& f : r.files) {
    if (!ValidEntry(f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("encode restore check: bad entry for ", f.path.substr(0, 256)));
    }
  }
  if (r.maps.size() > kMaxCheckMaps) {
    return absl::InvalidArgumentError("encode restore check: too many mappings");
  }
  for (size_t i = 0; i < r.maps.size(); ++i) {
    if (!ValidMap(r.maps[i], i == 0 ? nullptr : &r.maps[i - 1], r.files.size())) {
      return absl::InvalidArgumentError(absl::StrCat("encode restore check: bad mapping ", i));
    }
  }
  out->reserve(out->size() + EncodedSize(r));
  ByteWriter w(out);
  w.U32(kRestoreCheckMagic);
  w.U16(kRestoreCheckVersion);
  w.U16(0);
  w.U32(r.pid);
  w.U32(0);
  EncodeCpuVdso(r.cpu, r.vdso, w);
  w.U32(static_cast<uint32_t>(r.files.size()));
  for (const FileCheck& f : r.files) {
    w.U32(f.dev_major);
    w.U32(f.dev_minor);
    for (uint64_t v : {f.inode, f.size, f.mtime_ns, f.offset, f.length}) w.U64(v);
    w.U8(f.flags);
    w.U8(static_cast<uint8_t>(f.id.kind));
    w.U8(static_cast<uint8_t>(f.id.id.size()));
    w.U8(0);
    w.Bytes(f.id.id);
    w.String(f.path);
  }
  w.U32(static_cast<uint32_t>(r.maps.size()));
  for (const FileMapping& m : r.maps) {
    for (uint64_t v : {m.start, m.end, m.offset}) w.U64(v);
    w.U8(m.prot);
    w.U8(m.shared ? 1 : 0);
    w.U16(0);
    w.U32(m.file);
  }
  return absl::OkStatus();
}

absl::StatusOr<RestoreCheckRecord> DecodeRestoreCheck(std::span<const uint8_t> in) {
  ByteReader rd(in);
  RestoreCheckRecord r;
  if (rd.U32() != kRestoreCheckMagic || !rd.ok()) return Bad("magic");
  const uint16_t version = rd.U16();
  if (!rd.ok() || version != kRestoreCheckVersion) {
    return absl::DataLossError(
        absl::StrCat("decode restore check: unknown version ", version, " (know 1)"));
  }
  if (rd.U16() != 0) return Bad("header reserved field");
  r.pid = rd.U32();
  if (rd.U32() != 0) return Bad("reserved field after pid");
  DecodeCpuVdso(rd, &r.cpu, &r.vdso);
  const uint32_t n = rd.U32();
  if (!rd.ok()) return Bad("fixed fields (truncated)");
  if (n > kMaxCheckFiles || static_cast<uint64_t>(n) * (kFileFixed + 5) > rd.remaining()) {
    return absl::DataLossError(absl::StrCat("decode restore check: file count ", n,
                                            " exceeds its bound or the bytes left"));
  }
  r.files.resize(n);
  for (FileCheck& f : r.files) {
    f.dev_major = rd.U32();
    f.dev_minor = rd.U32();
    for (uint64_t* v : {&f.inode, &f.size, &f.mtime_ns, &f.offset, &f.length}) *v = rd.U64();
    f.flags = rd.U8();
    const uint8_t kind = rd.U8(), id_len = rd.U8(), reserved = rd.U8();
    if (!rd.ok() || reserved != 0 || kind > kMaxFileIdKind) return Bad("file entry");
    f.id.kind = static_cast<FileIdKind>(kind);
    std::span<const uint8_t> id = rd.Bytes(id_len);
    f.id.id.assign(reinterpret_cast<const char*>(id.data()), id.size());
    std::string_view path = rd.String(kMaxPath);
    if (!rd.ok()) return Bad("file entry (truncated)");
    f.path.assign(path.data(), path.size());
    if (!ValidEntry(f)) return Bad("file entry");
  }
  const uint32_t m = rd.U32();
  if (!rd.ok()) return Bad("mapping count (truncated)");
  if (m > kMaxCheckMaps || static_cast<uint64_t>(m) * kMapSize > rd.remaining()) {
    return absl::DataLossError(absl::StrCat("decode restore check: mapping count ", m,
                                            " exceeds its bound or the bytes left"));
  }
  r.maps.resize(m);
  for (size_t i = 0; i < r.maps.size(); ++i) {
    FileMapping& fm = r.maps[i];
    for (uint64_t* v : {&fm.start, &fm.end, &fm.offset}) *v = rd.U64();
    fm.prot = rd.U8();
    const uint8_t shared = rd.U8();
    const uint16_t reserved = rd.U16();
    fm.file = rd.U32();
    fm.shared = shared == 1;
    if (!rd.ok() || shared > 1 || reserved != 0 ||
        !ValidMap(fm, i == 0 ? nullptr : &r.maps[i - 1], r.files.size())) {
      return Bad("mapping entry");
    }
  }
  if (!rd.AtEnd()) {
    return absl::DataLossError(absl::StrCat("decode restore check: ", rd.remaining(),
                                            " trailing bytes after the last field"));
  }
  return r;
}

}  // namespace procmig
