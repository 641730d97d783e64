#include "migration/image_inspect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "migration/image_store.h"
#include "migration/process_state.h"
#include "transport/unique_fd.h"
#include "wire/wire_format.h"

namespace procmig {
namespace {

// Checks size and crc32c of one file, reading it in 1 MiB pieces.
absl::Status CheckFile(const std::string& path, uint64_t length, uint32_t crc) {
  int raw = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) return ErrnoStatus(absl::StatusCode::kDataLoss, absl::StrCat("open ", path), errno);
  UniqueFd fd(raw);
  struct stat st;
  if (fstat(raw, &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  if (static_cast<uint64_t>(st.st_size) != length) {
    return absl::DataLossError(
        absl::StrCat("check ", path, ": ", st.st_size, " bytes, the manifest says ", length));
  }
  constexpr size_t kChunk = 1u << 20;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  uint32_t c = 0;
  uint64_t off = 0;
  while (off < length) {
    ssize_t r = pread(raw, buf.get(), kChunk, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return ErrnoStatus(absl::StrCat("read ", path), r < 0 ? errno : EIO);
    c = crc32c::Extend(c, buf.get(), static_cast<size_t>(r));
    off += static_cast<uint64_t>(r);
  }
  if (c != crc) {
    return absl::DataLossError(
        absl::StrFormat("check %s: crc32c 0x%08x, the manifest says 0x%08x", path, c, crc));
  }
  return absl::OkStatus();
}

std::string Prot(uint32_t flags) {
  std::string s;
  s += (flags & wire::kBlockProtRead) ? 'r' : '-';
  s += (flags & wire::kBlockProtWrite) ? 'w' : '-';
  s += (flags & wire::kBlockProtExec) ? 'x' : '-';
  return s;
}

}  // namespace

absl::StatusOr<ImageInspection> InspectImageDir(const std::string& dir) {
  ASSIGN_OR_RETURN(ImageManifest m, ImageStore::ReadManifest(dir));
  ImageInspection out;
  std::string& t = out.text;
  uint64_t total = 0, stored = 0;
  for (const ImageBlock& b : m.blocks) {
    total += b.length;
    stored += b.stored_pages * m.page_size;
  }
  absl::StrAppend(&t, "checkpoint image ", dir, " (format ", kImageVersion, ")\n");
  absl::StrAppend(&t, "  session      ", SessionIdHex(m.session_id), "\n");
  absl::StrAppend(&t, "  page size    ", m.page_size, "\n");
  absl::StrAppend(&t, "  channels     ", m.channels, "\n");
  absl::StrAppend(&t, "  iterations   ", m.iterations, "\n");
  absl::StrAppend(&t, "  blocks       ", m.blocks.size(), ": ", total, " bytes, ", stored,
                  " stored, the rest holes\n");
  absl::StrAppend(&t, "  process state ", m.process_state_length, " bytes\n");
  const ReceiveStats& s = m.stats;
  absl::StrAppend(&t, "  received     ", s.pages, " pages (zero ", s.zero_pages, ", raw ",
                  s.raw_pages, ", xbzrle ", s.xbzrle_pages, ", zlib ", s.zlib_pages, ", torn ",
                  s.torn_pages, "), ", s.bytes, " bytes in ", s.duration_ms, " ms\n");
  absl::StrAppend(&t,
                  "\n  id  start               length       prot kind         stored     "
                  "digest    name\n");
  for (const ImageBlock& b : m.blocks) {
    auto kind =
        static_cast<wire::BlockKind>((b.flags & wire::kBlockKindMask) >> wire::kBlockKindShift);
    absl::StrAppendFormat(&t, "  %-3d 0x%016x  %-12d %s  %-12s %-10d %-9s %s\n", b.id, b.start,
                          b.length, Prot(b.flags), wire::BlockKindName(kind), b.stored_pages,
                          DigestStateName(b.digest), b.name);
  }
  for (const ImageBlock& b : m.blocks) {
    absl::Status st = CheckFile(absl::StrCat(dir, "/", b.FileName()), b.length, b.crc32c);
    if (!st.ok()) {
      out.verify_status = st;
      break;
    }
  }
  if (out.verify_status.ok()) {
    out.verify_status = CheckFile(absl::StrCat(dir, "/", kProcessStateFile), m.process_state_length,
                                  m.process_state_crc32c);
  }
  if (m.process_state_length > 0) {
    absl::StatusOr<std::vector<uint8_t>> ps = ImageStore::ReadProcessState(dir, m);
    absl::StatusOr<ProcessStateRecord> rec =
        ps.ok() ? DecodeProcessState(*ps) : absl::StatusOr<ProcessStateRecord>(ps.status());
    if (rec.ok()) {
      absl::StrAppend(&t, "\n  ", SummarizeProcessState(*rec));
    } else {
      absl::StrAppend(&t, "\n  process state: not decodable: ", rec.status().message(), "\n");
    }
  }
  absl::StrAppend(&t, "\n  files        ",
                  out.verify_status.ok() ? "match the manifest (sizes and crc32c)"
                                         : std::string(out.verify_status.message()),
                  "\n");
  return out;
}

}  // namespace procmig
