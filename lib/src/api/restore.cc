#include "procmig/restore.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "migration/block_memory.h"
#include "migration/image_store.h"
#include "migration/process_state.h"
#include "migration/restore_check.h"
#include "restore/file_premaps.h"
#include "restore/restore_process.h"
#include "restore_internal.h"
#include "transport/unique_fd.h"

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

}  // namespace

absl::StatusOr<ProcessStateRecord> DecodeStateForRestore(std::span<const uint8_t> process_state) {
  absl::StatusOr<ProcessStateRecord> state = DecodeProcessState(process_state);
  if (!state.ok()) {
    return absl::DataLossError(absl::StrCat("process state: ", state.status().message()));
  }
  return state;
}

absl::StatusOr<RestoreResult> StartRestore(const ProcessStateRecord& state,
                                           std::span<const ImageBlock> blocks,
                                           std::span<const BlockLocation> where,
                                           const RestoreOptions& options, bool live,
                                           const RestorePrepared& prepared) {
  std::vector<PlacedBlock> placed;
  for (size_t i = 0; i < blocks.size() && i < where.size(); ++i) {
    const ImageBlock& b = blocks[i];
    if (b.digest == DigestState::kMismatch) {
      return absl::DataLossError(
          absl::StrCat("block ", b.id, " does not match the sender's digest"));
    }
    if (b.length != 0) {
      placed.push_back(
          {b.id, b.start, b.length, where[i].address, where[i].mirrored, where[i].grows_down});
    }
  }
  RestoreProcessOptions o;
  o.pid_namespace = options.pid_namespace;
  o.start_timeout_ms = options.start_timeout_ms;
  for (int i = 0; i < 3; ++i) o.stdio_fds[i] = options.stdio_fds[i];
  o.verified = prepared.verified;
  o.premapped = prepared.premapped;
  o.layout = prepared.layout;
  ASSIGN_OR_RETURN(RestoredProcess p, StartRestoredProcess(state, placed, o));
  RestoreResult r;
  r.child = p.child;
  r.host_pid = p.host_pid;
  r.pid = p.pid;
  r.threads = p.threads;
  r.pid_namespace = p.pid_namespace;
  r.start_ms = static_cast<double>(p.start_ns) / 1e6;
  r.clone_ms = static_cast<double>(p.clone_ns) / 1e6;
  r.entry_ms = static_cast<double>(p.blob_entry_ns) / 1e6;
  for (int i = 0; i < 6; ++i) r.phase_ms[i] = static_cast<double>(p.blob_phase_ns[i]) / 1e6;
  r.slowest_op = p.slowest_op;
  r.slowest_op_ms = static_cast<double>(p.slowest_op_ns) / 1e6;
  if (live && p.first_park_ns != 0 && p.running_at_ns > p.first_park_ns) {
    r.pause_ms = static_cast<double>(p.running_at_ns - p.first_park_ns) / 1e6;
  }
  r.warnings = std::move(p.warnings);
  return r;
}

absl::StatusOr<int> OpenStdioRedirect(int fd, const std::string& path) {
  if (fd < 0 || fd > 2) {
    return absl::InvalidArgumentError(absl::StrCat("stdio redirect: fd ", fd, " is not 0, 1 or 2"));
  }
  const int flags = fd == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND;
  int f = open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (f < 0) {
    const int err = errno;
    return ErrnoStatus(absl::StrCat(path, ": open"), err);
  }
  if (f <= 2) {
    // Our own stdio was closed: keep the redirect clear of the numbers it replaces.
    const int above = fcntl(f, F_DUPFD_CLOEXEC, 3);
    const int err = errno;
    close(f);
    if (above < 0) return ErrnoStatus(absl::StrCat(path, ": dup above 2"), err);
    f = above;
  }
  return f;
}

absl::StatusOr<RestoreResult> RestoreImage(const std::string& dir, const RestoreOptions& options) {
  ASSIGN_OR_RETURN(ImageManifest m, ImageStore::ReadManifest(dir));
  ASSIGN_OR_RETURN(std::vector<uint8_t> ps, ImageStore::ReadProcessState(dir, m));
  // The files mapped at their final addresses (where free here), and the written pages of each
  // private file mapping (a library's .data and RELRO) put straight into them as the image is
  // read, as a live receiver does while the stream arrives: the restorer keeps them as they are.
  absl::StatusOr<ProcessStateRecord> state = DecodeStateForRestore(ps);
  if (!state.ok()) {
    return absl::Status(state.status().code(),
                        absl::StrCat("restore ", dir, ": ", state.status().message()));
  }
  FilePremaps premaps;
  premaps.Add(PremapsOf(BuildRestoreCheck(*state)));
  UniqueFd self_mem;
  if (!premaps.mapped().empty()) self_mem = UniqueFd(open("/proc/self/mem", O_RDWR | O_CLOEXEC));
  std::vector<TempBlock> temps(m.blocks.size());
  std::vector<BlockLocation> where(m.blocks.size());
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    const ImageBlock& b = m.blocks[i];
    if (b.length == 0) continue;
    temps[i].length = b.length;
    // Where the restorer will have nothing to move (or can move it keeping its huge pages).
    temps[i].addr =
        MapForBlock(b.length, BlockMapHint(b.flags, b.start), m.page_size, BlockGrowsDown(b.flags));
    if (temps[i].addr == MAP_FAILED) {
      return ErrnoStatus(absl::StatusCode::kResourceExhausted,
                         absl::StrCat("restore: map ", b.length, " bytes for block ", b.id), errno);
    }
    where[i].grows_down = BlockGrowsDown(b.flags);
    if (b.length >= (2u << 20) && !where[i].grows_down) {
      madvise(temps[i].addr, b.length, MADV_HUGEPAGE);
    }
    auto* bytes = static_cast<uint8_t*>(temps[i].addr);
    absl::Status read = ImageStore::ReadBlockInto(dir, b, {bytes, b.length});
    if (!read.ok()) {
      return absl::Status(read.code(), absl::StrCat("restore ", dir, ": ", read.message()));
    }
    where[i].address = reinterpret_cast<uint64_t>(bytes);
    if (self_mem.valid() && RestorerCopiesBlock(b.flags) && premaps.Covers(b.start, b.length)) {
      // pwrite through /proc/self/mem writes a read-only private mapping as a debugger does.
      where[i].mirrored = pwrite(self_mem.get(), bytes, b.length, static_cast<off_t>(b.start)) ==
                          static_cast<ssize_t>(b.length);
    }
  }
  const std::vector<PremappedFile> kept = premaps.kept();
  absl::StatusOr<RestoreResult> r =
      StartRestore(*state, m.blocks, where, options, false, {nullptr, kept, {}});
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat("restore ", dir, ": ", r.status().message()));
  }
  return r;
}

absl::StatusOr<int> WaitRestored(const RestoreResult& r) {
  RestoredProcess p;
  p.child = r.child;
  p.host_pid = r.host_pid;
  return WaitRestoredProcess(p);
}

std::string RenderRestoreResult(const RestoreResult& r) {
  std::string s = absl::StrFormat(
      "restored pid %u (host pid %d, %s), %u thread(s), in %.1f ms (process created after %.1f ms)",
      r.pid, r.host_pid, r.pid_namespace ? "new PID namespace" : "this PID namespace", r.threads,
      r.start_ms, r.clone_ms);
  if (r.pause_ms > 0) absl::StrAppendFormat(&s, "; program paused %.1f ms in all", r.pause_ms);
  absl::StrAppendFormat(
      &s,
      "\n  restorer: fds %.1f, unmap %.1f, memory %.1f, state %.1f, threads %.1f, "
      "ready %.1f ms (entered %.1f ms after the start)",
      r.phase_ms[0], r.phase_ms[1], r.phase_ms[2], r.phase_ms[3], r.phase_ms[4], r.phase_ms[5],
      r.entry_ms);
  if (!r.slowest_op.empty()) {
    absl::StrAppendFormat(&s, "\n  slowest memory op: %s, %.2f ms", r.slowest_op, r.slowest_op_ms);
  }
  for (const std::string& w : r.warnings) absl::StrAppend(&s, "\n  warning: ", w);
  return s;
}

}  // namespace procmig
