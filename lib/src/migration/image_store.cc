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
#include "migration/image_writer.h"
#include "transport/unique_fd.h"

namespace procmig {
namespace {

std::string Join(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
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

}  // namespace

absl::StatusOr<ImageManifest> ImageStore::Write(const std::string& final_dir,
                                                ImageManifest manifest,
                                                std::span<const BlockMemory* const> memory,
                                                std::span<const uint8_t> process_state, bool sync) {
  ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer, ImageWriter::Begin(final_dir));
  return writer->Commit(std::move(manifest), memory, process_state, sync);
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
    return absl::InvalidArgumentError(
        absl::StrCat("read ", path, " into ", dst.size(), " bytes: the block has ", block.length));
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
    return absl::DataLossError(
        absl::StrCat("read ", path, ": ", st.st_size, " bytes, the manifest says ", block.length));
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
      if (r == 0)
        return absl::DataLossError(absl::StrCat("read ", path, ": shorter than its size"));
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
