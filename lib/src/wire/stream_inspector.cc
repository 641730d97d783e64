#include "wire/stream_inspector.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "wire/stream_reader.h"

namespace procmig::wire {
namespace {

// Feeds pieces to a reader and folds each record into the summary.
class Collector {
 public:
  // False once reading must stop (an error was recorded).
  bool Feed(std::span<const uint8_t> bytes) {
    if (!s_.error.ok()) return false;
    if (absl::Status st = reader_.Feed(bytes); !st.ok()) return Stop(st);
    while (true) {
      absl::StatusOr<const Record*> r = reader_.Next();
      if (!r.ok()) return Stop(r.status());
      if (*r == nullptr) return true;
      Add(**r);
    }
  }

  StreamSummary Finish() {
    if (s_.error.ok()) s_.error = reader_.Finish();
    s_.bytes = reader_.offset();
    return std::move(s_);
  }

 private:
  bool Stop(absl::Status st) {
    s_.error = std::move(st);
    return false;
  }

  StreamSummary::Block* FindBlock(uint32_t id) {
    auto it = index_.find(id);
    return it == index_.end() ? nullptr : &s_.blocks[it->second];
  }

  void Add(const Record& r) {
    if (r.type == RecordType::kPreamble) {
      s_.preamble = std::get<Preamble>(r.body);
      return;
    }
    ++s_.records;
    ++s_.records_per_type[static_cast<uint8_t>(r.type)];
    switch (r.type) {
      case RecordType::kBlockAdd: {
        const auto& b = std::get<BlockAdd>(r.body);
        index_[b.block_id] = s_.blocks.size();
        s_.blocks.push_back({b.block_id, std::string(b.name), b.flags, b.start, b.length,
                             b.page_count, 0, r.offset, false, 0});
        break;
      }
      case RecordType::kBlockRemove:
        if (auto* b = FindBlock(std::get<BlockRemove>(r.body).block_id)) b->removed = true;
        break;
      case RecordType::kBlockResize: {
        const auto& rs = std::get<BlockResize>(r.body);
        if (auto* b = FindBlock(rs.block_id)) {
          b->length = rs.new_length;
          b->page_count = rs.new_page_count;
          ++b->resizes;
        }
        break;
      }
      case RecordType::kPageRun: {
        const auto& run = std::get<PageRun>(r.body);
        for (const PageEntry& e : run.pages) {
          auto enc = static_cast<uint8_t>(e.encoding);
          ++s_.pages_per_encoding[enc];
          s_.bytes_per_encoding[enc] += e.data.size();
        }
        s_.torn_pages += r.torn_pages;
        if (auto* b = FindBlock(run.block_id)) b->pages_received += run.pages.size();
        break;
      }
      case RecordType::kZeroRun: {
        const auto& run = std::get<ZeroRun>(r.body);
        s_.zero_run_pages += run.count;
        if (auto* b = FindBlock(run.block_id)) b->pages_received += run.count;
        break;
      }
      case RecordType::kIteration:
        s_.iterations.push_back({std::get<IterationMarker>(r.body), r.offset});
        break;
      case RecordType::kProcessState:
        s_.process_state_bytes += std::get<ProcessState>(r.body).data.size();
        break;
      case RecordType::kRestoreCheck:
        s_.restore_check_bytes += std::get<RestoreCheck>(r.body).data.size();
        break;
      case RecordType::kEndOfStream:
        s_.end_of_stream = true;
        s_.aborted = std::get<EndOfStream>(r.body).aborted;
        break;
      case RecordType::kAck:
        s_.acks.push_back(std::get<Ack>(r.body));
        break;
      case RecordType::kError: {
        const auto& e = std::get<ErrorRecord>(r.body);
        s_.errors.emplace_back(e.code, std::string(e.message));
        break;
      }
      case RecordType::kPreamble:
        break;
    }
  }

  StreamReader reader_;
  StreamSummary s_;
  absl::flat_hash_map<uint32_t, size_t> index_;
};

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

std::string ProtString(uint32_t flags) {
  std::string p = "---";
  if (flags & kBlockProtRead) p[0] = 'r';
  if (flags & kBlockProtWrite) p[1] = 'w';
  if (flags & kBlockProtExec) p[2] = 'x';
  return p;
}

}  // namespace

absl::StatusOr<StreamSummary> StreamInspector::InspectFd(int fd) {
  Collector c;
  std::vector<uint8_t> buf(1 << 16);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("inspect stream: read", errno);
    if (n == 0) break;
    if (!c.Feed({buf.data(), static_cast<size_t>(n)})) break;
  }
  return c.Finish();
}

absl::StatusOr<StreamSummary> StreamInspector::InspectFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("inspect stream: open ", path), errno);
  absl::StatusOr<StreamSummary> s = InspectFd(fd);
  ::close(fd);
  return s;
}

StreamSummary StreamInspector::InspectBytes(std::span<const uint8_t> bytes, size_t chunk) {
  Collector c;
  if (chunk == 0) chunk = 1;
  for (size_t pos = 0; pos < bytes.size(); pos += chunk) {
    if (!c.Feed(bytes.subspan(pos, std::min(chunk, bytes.size() - pos)))) break;
  }
  return c.Finish();
}

std::string StreamInspector::Render(const StreamSummary& s) {
  std::string out;
  if (s.preamble) {
    const Preamble& p = *s.preamble;
    absl::StrAppendFormat(&out,
                          "stream: version %d, %s, page size %d, features 0x%x%s%s%s%s, session "
                          "%s, channel %d of %d\n",
                          p.version, p.direction == Direction::kForward ? "forward" : "reverse",
                          p.page_size, p.features, (p.features & kFeatureXbzrle) ? " xbzrle" : "",
                          (p.features & kFeatureZlib) ? " zlib" : "",
                          (p.features & kFeatureMultiChannel) ? " multi-channel" : "",
                          (p.features & kFeatureZeroRun) ? " zero-run" : "", Hex(p.session_id),
                          p.channel_index, p.channel_count);
  } else {
    out += "stream: no preamble\n";
  }
  absl::StrAppend(&out, "bytes: ", s.bytes, ", records: ", s.records, "\n");
  for (size_t t = 1; t < s.records_per_type.size(); ++t) {
    if (s.records_per_type[t] == 0) continue;
    absl::StrAppend(&out, "  ", RecordTypeName(static_cast<RecordType>(t)), ": ",
                    s.records_per_type[t], "\n");
  }
  if (!s.blocks.empty()) absl::StrAppend(&out, "blocks: ", s.blocks.size(), "\n");
  for (const auto& b : s.blocks) {
    absl::StrAppendFormat(
        &out, "  #%d %s 0x%x-0x%x %s %s, %d pages, %d received%s%s\n", b.id, b.name, b.start,
        b.start + b.length, ProtString(b.flags),
        BlockKindName(static_cast<BlockKind>((b.flags & kBlockKindMask) >> kBlockKindShift)),
        b.page_count, b.pages_received, b.resizes ? absl::StrCat(", resized ", b.resizes) : "",
        b.removed ? ", removed" : "");
  }
  uint64_t total_pages = s.zero_run_pages;
  for (uint64_t n : s.pages_per_encoding) total_pages += n;
  if (total_pages > 0) {
    absl::StrAppend(&out, "pages: ", total_pages, "\n");
    for (size_t e = 1; e < s.pages_per_encoding.size(); ++e) {
      if (s.pages_per_encoding[e] == 0) continue;
      absl::StrAppend(&out, "  ", PageEncodingName(static_cast<PageEncoding>(e)), ": ",
                      s.pages_per_encoding[e], " pages, ", s.bytes_per_encoding[e], " bytes\n");
    }
    if (s.zero_run_pages > 0) {
      absl::StrAppend(&out, "  zero runs: ", s.zero_run_pages, " pages in ",
                      s.records_per_type[static_cast<uint8_t>(RecordType::kZeroRun)], " records\n");
    }
    if (s.torn_pages) absl::StrAppend(&out, "  torn (resent later): ", s.torn_pages, "\n");
  }
  for (const auto& it : s.iterations) {
    const IterationMarker& m = it.marker;
    absl::StrAppendFormat(&out,
                          "iteration %d%s: %d pages sent (%d zero), %d bytes, %d dirty, %.3f ms "
                          "(at offset %d)\n",
                          m.iteration, m.final ? " (final)" : "", m.pages_sent, m.zero_pages,
                          m.bytes_sent, m.dirty_pages, m.duration_ns / 1e6, it.offset);
  }
  if (s.records_per_type[static_cast<uint8_t>(RecordType::kRestoreCheck)] > 0) {
    absl::StrAppend(&out, "restore check: ", s.restore_check_bytes, " bytes\n");
  }
  if (s.records_per_type[static_cast<uint8_t>(RecordType::kProcessState)] > 0) {
    absl::StrAppend(&out, "process state: ", s.process_state_bytes, " bytes\n");
  }
  for (const Ack& a : s.acks) {
    absl::StrAppend(&out, "ack: ", AckKindName(a.kind), " ", a.sequence, "\n");
  }
  for (const auto& [code, message] : s.errors) {
    absl::StrAppend(&out,
                    "error record: ", absl::StatusCodeToString(static_cast<absl::StatusCode>(code)),
                    ": ", message, "\n");
  }
  if (!s.error.ok()) {
    absl::StrAppend(&out, "CORRUPT: ", s.error.message(), "\n");
  } else {
    absl::StrAppend(&out, "OK: end of stream", s.aborted ? " (sender aborted)" : "", "\n");
  }
  return out;
}

}  // namespace procmig::wire
