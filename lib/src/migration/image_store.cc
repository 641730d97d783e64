#include "migration/image_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "transport/unique_fd.h"

namespace procmig {
namespace {

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

absl::StatusOr<UniqueFd> CreateFile(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("create ", path), errno);
  return UniqueFd(fd);
}

absl::Status Finish(UniqueFd fd, const std::string& path, bool sync) {
  if (sync && fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", path), errno);
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", dir), errno);
  UniqueFd owned(fd);
  if (fsync(fd) != 0) return ErrnoStatus(absl::StrCat("fsync ", dir), errno);
  return absl::OkStatus();
}

// Writes the pages that may hold data, in maximal runs; returns how many pages were written.
absl::StatusOr<uint64_t> WriteBlockFile(const std::string& path, const BlockMemory& mem,
                                        bool sync) {
  ASSIGN_OR_RETURN(UniqueFd fd, CreateFile(path));
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
  RETURN_IF_ERROR(Finish(std::move(fd), path, sync));
  return stored;
}

absl::Status WriteSmallFile(const std::string& path, std::span<const uint8_t> bytes, bool sync) {
  ASSIGN_OR_RETURN(UniqueFd fd, CreateFile(path));
  RETURN_IF_ERROR(WriteAll(fd.get(), bytes.data(), bytes.size(), 0, path));
  return Finish(std::move(fd), path, sync);
}

absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path, uint64_t limit) {
  int raw = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("open ", path, ": ENOENT"));
    return ErrnoStatus(absl::StrCat("open ", path), errno);
  }
  UniqueFd fd(raw);
  struct stat st;
  if (fstat(raw, &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  if (static_cast<uint64_t>(st.st_size) > limit) {
    return absl::DataLossError(
        absl::StrCat("read ", path, ": ", st.st_size, " bytes, more than the expected ", limit));
  }
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = pread(raw, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("read ", path), errno);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

absl::Status WriteInto(const std::string& tmp, ImageManifest& manifest,
                       std::span<const BlockMemory* const> memory,
                       std::span<const uint8_t> process_state, bool sync) {
  for (size_t i = 0; i < manifest.blocks.size(); ++i) {
    ImageBlock& b = manifest.blocks[i];
    ASSIGN_OR_RETURN(b.stored_pages, WriteBlockFile(Join(tmp, b.FileName()), *memory[i], sync));
  }
  RETURN_IF_ERROR(WriteSmallFile(Join(tmp, kProcessStateFile), process_state, sync));
  std::string text = EncodeManifest(manifest);
  RETURN_IF_ERROR(WriteSmallFile(Join(tmp, kManifestFile),
                                 {reinterpret_cast<const uint8_t*>(text.data()), text.size()},
                                 sync));
  if (sync) RETURN_IF_ERROR(SyncDir(tmp));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageManifest> ImageStore::Write(const std::string& final_dir_in,
                                                ImageManifest manifest,
                                                std::span<const BlockMemory* const> memory,
                                                std::span<const uint8_t> process_state, bool sync) {
  if (memory.size() != manifest.blocks.size()) {
    return absl::InternalError("write image: block memory and manifest disagree");
  }
  std::string final_dir = final_dir_in;
  while (final_dir.size() > 1 && final_dir.back() == '/') final_dir.pop_back();
  if (final_dir.empty()) return absl::InvalidArgumentError("write image: empty directory name");
  size_t slash = final_dir.rfind('/');
  std::string parent = slash == std::string::npos ? "." : final_dir.substr(0, slash + 1);
  std::string name = slash == std::string::npos ? final_dir : final_dir.substr(slash + 1);
  absl::StatusOr<bool> empty = IsEmptyDir(final_dir);
  if (empty.ok() && !*empty) {
    return absl::AlreadyExistsError(
        absl::StrCat("write image to ", final_dir, ": the directory exists and is not empty"));
  }
  if (!empty.ok() && !absl::IsNotFound(empty.status())) return empty.status();

  std::string tmpl = absl::StrCat(parent, "/.tmp-", name, "-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoStatus(absl::StrCat("write image: create temporary directory in ", parent), errno);
  }
  const std::string tmp = tmpl;
  absl::Status s = WriteInto(tmp, manifest, memory, process_state, sync);
  if (s.ok() && rename(tmp.c_str(), final_dir.c_str()) != 0) {
    s = ErrnoStatus(absl::StrCat("write image: rename ", tmp, " to ", final_dir), errno);
  }
  if (!s.ok()) {
    RemoveTree(tmp);
    return s;
  }
  if (sync) RETURN_IF_ERROR(SyncDir(parent));
  return manifest;
}

absl::StatusOr<ImageManifest> ImageStore::ReadManifest(const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                   ReadWholeFile(Join(dir, kManifestFile), kMaxManifestBytes));
  absl::StatusOr<ImageManifest> m =
      ParseManifest({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
  if (!m.ok()) {
    return absl::DataLossError(absl::StrCat("read image ", dir, ": ", m.status().message()));
  }
  return m;
}

absl::StatusOr<std::vector<uint8_t>> ImageStore::ReadBlock(const std::string& dir,
                                                           const ImageManifest& m,
                                                           const ImageBlock& block) {
  (void)m;
  std::vector<uint8_t> bytes(block.length, 0);
  RETURN_IF_ERROR(ReadBlockInto(dir, block, bytes));
  return bytes;
}

absl::Status ImageStore::ReadBlockInto(const std::string& dir, const ImageBlock& block,
                                       std::span<uint8_t> dst) {
  std::string path = Join(dir, block.FileName());
  if (dst.size() != block.length) {
    return absl::InvalidArgumentError(absl::StrCat("read ", path, " into ", dst.size(),
                                                   " bytes: the block has ", block.length));
  }
  int raw = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("open ", path, ": ENOENT"));
    return ErrnoStatus(absl::StrCat("open ", path), errno);
  }
  UniqueFd fd(raw);
  struct stat st;
  if (fstat(raw, &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  if (static_cast<uint64_t>(st.st_size) != block.length) {
    return absl::DataLossError(absl::StrCat("read ", path, ": ", st.st_size,
                                            " bytes, the manifest says ", block.length));
  }
  for (off_t pos = 0; static_cast<uint64_t>(pos) < block.length;) {
    off_t data = lseek(raw, pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole is left
    off_t hole = lseek(raw, data, SEEK_HOLE);
    if (hole < 0 || static_cast<uint64_t>(hole) > block.length) {
      hole = static_cast<off_t>(block.length);
    }
    for (off_t at = data; at < hole;) {
      ssize_t r = pread(raw, dst.data() + at, static_cast<size_t>(hole - at), at);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus(absl::StrCat("read ", path), errno);
      if (r == 0) return absl::DataLossError(absl::StrCat("read ", path, ": shorter than its size"));
      at += r;
    }
    pos = hole;
  }
  uint32_t crc = crc32c::Value(dst.data(), dst.size());
  if (crc != block.crc32c) {
    return absl::DataLossError(absl::StrCat("read ", path, ": crc32c mismatch (manifest 0x",
                                            absl::Hex(block.crc32c), ", file 0x", absl::Hex(crc),
                                            ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> ImageStore::ReadProcessState(const std::string& dir,
                                                                  const ImageManifest& m) {
  std::string path = Join(dir, kProcessStateFile);
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadWholeFile(path, m.process_state_length));
  if (bytes.size() != m.process_state_length ||
      crc32c::Value(bytes.data(), bytes.size()) != m.process_state_crc32c) {
    return absl::DataLossError(
        absl::StrCat("read ", path, ": size or crc32c does not match the manifest"));
  }
  return bytes;
}

}  // namespace procmig
