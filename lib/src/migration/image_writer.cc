#include "migration/image_writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "migration/image_manifest.h"

namespace procmig {
namespace {

constexpr auto kWriteBehindPeriod = std::chrono::milliseconds(50);

std::string Join(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// NotFound when `dir` does not exist; true when it is an empty directory.
absl::StatusOr<bool> IsEmptyDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return absl::NotFoundError(dir);
    return ErrnoStatus(absl::StrCat("open store directory ", dir), errno);
  }
  bool empty = true;
  while (dirent* e = readdir(d)) {
    absl::string_view n = e->d_name;
    if (n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  closedir(d);
  return empty;
}

void RemoveTree(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      absl::string_view n = e->d_name;
      if (n != "." && n != "..") unlink(Join(dir, n).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

// Removes "<parent>/.tmp-<name>-XXXXXX" directories whose <name> `ours` accepts and that no
// live writer holds (a killed receiver's). Returns how many.
size_t RemoveStaleTemps(const std::string& parent,
                        absl::FunctionRef<bool(absl::string_view name)> ours) {
  DIR* d = opendir(parent.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> stale;
  while (dirent* e = readdir(d)) {
    absl::string_view n = e->d_name;
    if (!absl::ConsumePrefix(&n, ".tmp-") || n.size() < 8 || n[n.size() - 7] != '-' ||
        !ours(n.substr(0, n.size() - 7))) {
      continue;
    }
    std::string path = Join(parent, e->d_name);
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.valid() && flock(fd.get(), LOCK_EX | LOCK_NB) == 0) stale.push_back(path);
  }
  closedir(d);
  for (const std::string& path : stale) RemoveTree(path);
  return stale.size();
}

absl::Status WriteAll(int fd, const uint8_t* p, size_t n, uint64_t offset,
                      const std::string& what) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("write ", what), errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> CreateFile(const std::string& path, int access) {
  int fd = open(path.c_str(), access | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("create ", path), errno);
  return UniqueFd(fd);
}

absl::Status SyncDir(const std::string& dir) {
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", dir), errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", dir), errno);
  return absl::OkStatus();
}

// Writes the pages of block memory that may hold data, in maximal runs (the file is sparse);
// returns how many pages were written. The file stays open in `fd` (for the final sync).
absl::StatusOr<uint64_t> WriteBlockFile(const std::string& path, const BlockMemory& mem,
                                        UniqueFd& fd) {
  ASSIGN_OR_RETURN(fd, CreateFile(path, O_WRONLY));
  if (ftruncate(fd.get(), static_cast<off_t>(mem.length())) != 0) {
    return ErrnoStatus(absl::StrCat("size ", path), errno);
  }
  uint64_t stored = 0;
  const uint64_t pages = mem.page_count();
  const uint64_t ps = mem.page_size();
  for (uint64_t i = 0; i < pages;) {
    if (!mem.MaybeNonZero(i)) {
      ++i;
      continue;
    }
    uint64_t j = i;
    while (j < pages && mem.MaybeNonZero(j)) ++j;
    RETURN_IF_ERROR(WriteAll(fd.get(), mem.page(i), (j - i) * ps, i * ps, path));
    stored += j - i;
    i = j;
  }
  return stored;
}

absl::StatusOr<UniqueFd> WriteSmallFile(const std::string& path, std::span<const uint8_t> bytes) {
  ASSIGN_OR_RETURN(UniqueFd fd, CreateFile(path, O_WRONLY));
  RETURN_IF_ERROR(WriteAll(fd.get(), bytes.data(), bytes.size(), 0, path));
  return fd;
}

// fsync of every file at once through io_uring, whose workers run them in parallel: the 101
// fsyncs of a 1 GiB mem_workload's blocks took about 85 us each one after the other here (under
// strace), most of a zero-filled migration's ack wait. False when the ring could not be set up or
// a submission failed (the caller then fsyncs them all in turn: an fsync again is harmless);
// otherwise every file was fsync'ed, the first error in *status.
bool FsyncTogether(const std::vector<std::pair<int, std::string>>& files, absl::Status* status) {
  constexpr unsigned kDepth = 64;
  io_uring ring;
  if (files.empty() || io_uring_queue_init(kDepth, &ring, 0) != 0) return false;
  *status = absl::OkStatus();
  size_t next = 0, done = 0;
  bool ok = true;
  while (ok && done < files.size()) {
    for (io_uring_sqe* sqe;
         next < files.size() && next - done < kDepth && (sqe = io_uring_get_sqe(&ring)) != nullptr;
         ++next) {
      io_uring_prep_fsync(sqe, files[next].first, 0);
      io_uring_sqe_set_data64(sqe, next);
    }
    const int r = io_uring_submit_and_wait(&ring, 1);
    ok = r >= 0 || r == -EINTR;
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring, &cqe) == 0) {
      const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
      if (cqe->res < 0 && status->ok()) {
        *status = ErrnoStatus(absl::StrCat("fsync ", files[i].second), -cqe->res);
      }
      io_uring_cqe_seen(&ring, cqe);
      ++done;
    }
  }
  io_uring_queue_exit(&ring);
  return ok;
}

// Makes the files (by path, for errors) and `dir` durable. Every file's data is written first and
// only then is each fsync'ed: an fsync then finds its data on disk and its metadata in the journal
// transaction the first fsync committed. An fsync per file doing all its own work cost a journal
// commit each, about 4 ms on ext4 here (390 ms for the 101 blocks of a 1 GiB mem_workload); a
// syncfs would also wait for every other writer on the file system.
absl::Status SyncAll(const std::vector<std::pair<int, std::string>>& files, int dir,
                     const std::string& dir_path) {
  for (const auto& [fd, path] : files) {
    // Errors show up again at the fsync.
    (void)sync_file_range(
        fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  }
  absl::Status together;
  if (FsyncTogether(files, &together)) {
    RETURN_IF_ERROR(together);
  } else {
    for (const auto& [fd, path] : files) {
      if (fsync(fd) != 0) return ErrnoStatus(absl::StrCat("fsync ", path), errno);
    }
  }
  if (fsync(dir) != 0) return ErrnoStatus(absl::StrCat("fsync ", dir_path), errno);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageWriter>> ImageWriter::Begin(const std::string& final_dir_in) {
  std::string final_dir = final_dir_in;
  while (final_dir.size() > 1 && final_dir.back() == '/') final_dir.pop_back();
  if (final_dir.empty()) return absl::InvalidArgumentError("write image: empty directory name");
  const size_t slash = final_dir.rfind('/');
  // "/x" -> "/", "a/b" -> "a", "b" -> "."
  std::string parent = slash == std::string::npos ? "."
                       : slash == 0               ? "/"
                                                  : final_dir.substr(0, slash);
  const std::string name = slash == std::string::npos ? final_dir : final_dir.substr(slash + 1);
  absl::StatusOr<bool> empty = IsEmptyDir(final_dir);
  if (empty.ok() && !*empty) {
    return absl::AlreadyExistsError(
        absl::StrCat("write image to ", final_dir, ": the directory exists and is not empty"));
  }
  if (!empty.ok() && !absl::IsNotFound(empty.status())) return empty.status();
  RemoveStaleTemps(parent, [&](absl::string_view n) { return n == name; });

  // Between mkdtemp and flock another writer's RemoveStaleTemps may take the new directory for
  // a leftover; then the path no longer names it, and we make another.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string tmp = absl::StrCat(parent == "/" ? "" : parent, "/.tmp-", name, "-XXXXXX");
    if (mkdtemp(tmp.data()) == nullptr) {
      return ErrnoStatus(absl::StrCat("write image: create temporary directory in ", parent),
                         errno);
    }
    UniqueFd dir(open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!dir.valid() || flock(dir.get(), LOCK_EX | LOCK_NB) != 0) continue;
    struct stat held, named;
    if (fstat(dir.get(), &held) != 0 || stat(tmp.c_str(), &named) != 0 ||
        held.st_ino != named.st_ino || held.st_dev != named.st_dev) {
      continue;
    }
    return std::unique_ptr<ImageWriter>(
        new ImageWriter(final_dir, std::move(parent), std::move(tmp), std::move(dir)));
  }
  return absl::AbortedError(
      absl::StrCat("write image to ", final_dir, ": its temporary directory was removed under us"));
}

size_t ImageWriter::RemoveStaleSessionTemps(const std::string& store_dir) {
  return RemoveStaleTemps(store_dir, [](absl::string_view n) {
    std::array<uint8_t, 16> id;  // a name SessionIdHex gives, lower case
    return ParseSessionIdHex(n, &id) && SessionIdHex(id) == n;
  });
}

ImageWriter::ImageWriter(std::string final_dir, std::string parent, std::string tmp,
                         UniqueFd dir_fd)
    : final_dir_(std::move(final_dir)),
      parent_(std::move(parent)),
      tmp_(std::move(tmp)),
      dir_fd_(std::move(dir_fd)) {
  write_behind_ = std::thread([this] { WriteBehind(); });
}

ImageWriter::~ImageWriter() {
  StopWriteBehind();
  if (committed_) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    files_.clear();
  }
  RemoveTree(tmp_);
}

void ImageWriter::StopWriteBehind() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (write_behind_.joinable()) write_behind_.join();
}

void ImageWriter::WriteBehind() {
  std::unique_lock<std::mutex> l(mu_);
  while (!cv_.wait_for(l, kWriteBehindPeriod, [this] { return stop_; })) {
    // Starts writeback of what was written since the last round and returns; the final sync
    // then waits only for what is still in flight. Errors show up again at its fsync.
    for (const auto& [id, fd] : files_) {
      (void)sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
    }
  }
}

absl::StatusOr<UniqueFd> ImageWriter::CreateBlockFile(uint32_t id) {
  const std::string path = Join(tmp_, BlockFileName(id));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (files_.count(id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("create ", path, ": block ", id, " has one"));
    }
  }
  ASSIGN_OR_RETURN(UniqueFd fd, CreateFile(path, O_RDWR));
  UniqueFd mine(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!mine.valid()) return ErrnoStatus(absl::StrCat("dup ", path), errno);
  std::lock_guard<std::mutex> l(mu_);
  files_[id] = std::move(mine);
  return fd;
}

void ImageWriter::RemoveBlockFile(uint32_t id) {
  std::lock_guard<std::mutex> l(mu_);
  if (files_.erase(id) != 0) unlink(Join(tmp_, BlockFileName(id)).c_str());
}

absl::StatusOr<ImageManifest> ImageWriter::Commit(ImageManifest manifest,
                                                  std::span<const BlockMemory* const> memory,
                                                  std::span<const uint8_t> process_state,
                                                  bool sync) {
  if (memory.size() != manifest.blocks.size()) {
    return absl::InternalError("write image: block memory and manifest disagree");
  }
  StopWriteBehind();
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [id, fd] : files_) {
    bool listed = false;
    for (const ImageBlock& b : manifest.blocks) listed = listed || b.id == id;
    if (!listed) {
      return absl::InternalError(
          absl::StrCat("write image: block ", id, " has a file but is not in the manifest"));
    }
  }
  std::vector<UniqueFd> written;  // the files this writes itself
  std::vector<std::pair<int, std::string>> to_sync;
  for (size_t i = 0; i < manifest.blocks.size(); ++i) {
    ImageBlock& b = manifest.blocks[i];
    std::string path = Join(tmp_, b.FileName());
    auto it = files_.find(b.id);
    if (it == files_.end()) {
      UniqueFd fd;
      ASSIGN_OR_RETURN(b.stored_pages, WriteBlockFile(path, *memory[i], fd));
      to_sync.emplace_back(fd.get(), std::move(path));
      written.push_back(std::move(fd));
    } else {
      // Written behind the stream: its pages are there already, the never written ones are
      // holes.
      b.stored_pages = memory[i]->CountMaybeNonZero();
      to_sync.emplace_back(it->second.get(), std::move(path));
    }
  }
  const std::string text = EncodeManifest(manifest);
  for (auto [name, bytes] :
       {std::pair{kProcessStateFile, process_state},
        std::pair{kManifestFile,
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                           text.size())}}) {
    std::string path = Join(tmp_, name);
    ASSIGN_OR_RETURN(UniqueFd fd, WriteSmallFile(path, bytes));
    to_sync.emplace_back(fd.get(), std::move(path));
    written.push_back(std::move(fd));
  }
  if (sync) RETURN_IF_ERROR(SyncAll(to_sync, dir_fd_.get(), tmp_));
  if (rename(tmp_.c_str(), final_dir_.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("write image: rename ", tmp_, " to ", final_dir_), errno);
  }
  committed_ = true;
  if (sync) RETURN_IF_ERROR(SyncDir(parent_));
  return manifest;
}

}  // namespace procmig
