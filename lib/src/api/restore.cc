#include "procmig/restore.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "migration/image_store.h"
#include "migration/process_state.h"
#include "restore/restore_process.h"

namespace procmig {

namespace {

// An anonymous mapping holding one block, unmapped when destroyed.
struct TempBlock {
  void* addr = MAP_FAILED;
  size_t length = 0;
  ~TempBlock() {
    if (addr != MAP_FAILED) munmap(addr, length);
  }
};

// Reads the data extents of a sparse block file into `dst` (holes stay zero) and returns the
// crc32c of all `length` bytes.
absl::StatusOr<uint32_t> LoadBlockFile(const std::string& path, uint8_t* dst, uint64_t length) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StatusCode::kNotFound, absl::StrCat("open ", path), errno);
  off_t pos = 0;
  absl::Status st;
  while (static_cast<uint64_t>(pos) < length) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole is left
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(length);
    if (static_cast<uint64_t>(hole) > length) hole = static_cast<off_t>(length);
    for (off_t at = data; at < hole;) {
      ssize_t n = pread(fd, dst + at, static_cast<size_t>(hole - at), at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        st = n < 0 ? ErrnoStatus(absl::StatusCode::kDataLoss, absl::StrCat("read ", path), errno)
                   : absl::DataLossError(absl::StrCat("read ", path, ": shorter than its block"));
        break;
      }
      at += n;
    }
    if (!st.ok()) break;
    pos = hole;
  }
  close(fd);
  RETURN_IF_ERROR(st);
  return crc32c::Value(dst, length);
}

}  // namespace

absl::StatusOr<RestoreResult> RestoreImage(const std::string& dir, const RestoreOptions& options) {
  ASSIGN_OR_RETURN(ImageManifest m, ImageStore::ReadManifest(dir));
  ASSIGN_OR_RETURN(std::vector<uint8_t> ps, ImageStore::ReadProcessState(dir, m));
  absl::StatusOr<ProcessStateRecord> state = DecodeProcessState(ps);
  if (!state.ok()) {
    return absl::DataLossError(
        absl::StrCat("restore ", dir, ": process state: ", state.status().message()));
  }
  std::vector<TempBlock> temps(m.blocks.size());
  std::vector<PlacedBlock> placed;
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    const ImageBlock& b = m.blocks[i];
    if (b.digest == DigestState::kMismatch) {
      return absl::DataLossError(absl::StrCat("restore ", dir, ": block ", b.id,
                                              " did not match the sender's digest when stored"));
    }
    if (b.length == 0) continue;
    temps[i].length = b.length;
    temps[i].addr = mmap(nullptr, b.length, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (temps[i].addr == MAP_FAILED) {
      return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                         absl::StrCat("restore: map ", b.length, " bytes for block ", b.id), errno);
    }
    if (b.length >= (2u << 20)) madvise(temps[i].addr, b.length, MADV_HUGEPAGE);
    ASSIGN_OR_RETURN(uint32_t crc,
                     LoadBlockFile(absl::StrCat(dir, "/block-", b.id, ".bin"),
                                   static_cast<uint8_t*>(temps[i].addr), b.length));
    if (crc != b.crc32c) {
      return absl::DataLossError(absl::StrFormat(
          "restore %s: block-%u.bin has crc32c %08x, the manifest says %08x", dir, b.id, crc,
          b.crc32c));
    }
    placed.push_back({b.id, b.start, b.length, reinterpret_cast<uint64_t>(temps[i].addr)});
  }
  RestoreProcessOptions o;
  o.pid_namespace = options.pid_namespace;
  o.start_timeout_ms = options.start_timeout_ms;
  absl::StatusOr<RestoredProcess> p = StartRestoredProcess(*state, placed, o);
  if (!p.ok()) {
    return absl::Status(p.status().code(), absl::StrCat("restore ", dir, ": ", p.status().message()));
  }
  RestoreResult r;
  r.child = p->child;
  r.host_pid = p->host_pid;
  r.pid = p->pid;
  r.threads = p->threads;
  r.pid_namespace = p->pid_namespace;
  r.start_ms = static_cast<double>(p->start_ns) / 1e6;
  r.clone_ms = static_cast<double>(p->clone_ns) / 1e6;
  for (int i = 0; i < 6; ++i) r.phase_ms[i] = static_cast<double>(p->blob_phase_ns[i]) / 1e6;
  r.warnings = p->warnings;
  return r;
}

absl::StatusOr<int> WaitRestored(const RestoreResult& r) {
  RestoredProcess p;
  p.child = r.child;
  return WaitRestoredProcess(p);
}

std::string RenderRestoreResult(const RestoreResult& r) {
  std::string s = absl::StrFormat(
      "restored pid %u (host pid %d, %s), %u thread(s), in %.1f ms (process created after %.1f ms)",
      r.pid, r.host_pid, r.pid_namespace ? "new PID namespace" : "this PID namespace", r.threads,
      r.start_ms, r.clone_ms);
  if (r.pause_ms > 0) absl::StrAppendFormat(&s, "; program paused %.1f ms in all", r.pause_ms);
  absl::StrAppendFormat(&s,
                        "\n  restorer: fds %.1f, unmap %.1f, memory %.1f, state %.1f, threads %.1f, "
                        "ready %.1f ms",
                        r.phase_ms[0], r.phase_ms[1], r.phase_ms[2], r.phase_ms[3], r.phase_ms[4],
                        r.phase_ms[5]);
  for (const std::string& w : r.warnings) absl::StrAppend(&s, "\n  warning: ", w);
  return s;
}

}  // namespace procmig
