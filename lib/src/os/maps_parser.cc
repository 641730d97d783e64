#include "os/maps_parser.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace procmig {
namespace {

constexpr absl::string_view kDeletedSuffix = " (deleted)";

absl::Status FieldError(int line_number, absl::string_view field, absl::string_view token,
                        absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("parse maps line ", line_number, ": field ", field, " '", token, "': ", why));
}

// Hex digits only (no 0x, no sign), 1..max_digits of them.
bool ParseHex(absl::string_view s, size_t max_digits, uint64_t* out) {
  if (s.empty() || s.size() > max_digits) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

bool ParseDecimal(absl::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// Splits off the next space-delimited token and skips the spaces after it.
absl::string_view NextToken(absl::string_view* rest) {
  size_t sp = rest->find(' ');
  absl::string_view token = rest->substr(0, sp);
  if (sp == absl::string_view::npos) {
    rest->remove_prefix(rest->size());
  } else {
    rest->remove_prefix(sp);
    size_t non_space = rest->find_first_not_of(' ');
    rest->remove_prefix(non_space == absl::string_view::npos ? rest->size() : non_space);
  }
  return token;
}

RegionKind KindOf(absl::string_view path) {
  if (path.empty()) return RegionKind::kAnonymous;
  if (path == "[heap]") return RegionKind::kHeap;
  if (path == "[stack]") return RegionKind::kStack;
  if (path.front() == '[' && path.back() == ']') return RegionKind::kSpecial;
  return RegionKind::kFile;
}

}  // namespace

absl::StatusOr<MemoryRegion> MapsParser::ParseLine(std::string_view line, int line_number) {
  MemoryRegion r;
  absl::string_view rest(line.data(), line.size());

  absl::string_view range = NextToken(&rest);
  size_t dash = range.find('-');
  if (dash == absl::string_view::npos) {
    return FieldError(line_number, "address", range, "expected <start>-<end>");
  }
  if (!ParseHex(range.substr(0, dash), 16, &r.start) ||
      !ParseHex(range.substr(dash + 1), 16, &r.end)) {
    return FieldError(line_number, "address", range, "expected hex <start>-<end>");
  }
  if (r.start >= r.end) {
    return FieldError(line_number, "address", range, "start is not below end");
  }

  absl::string_view perms = NextToken(&rest);
  if (perms.size() != 4 || (perms[0] != 'r' && perms[0] != '-') ||
      (perms[1] != 'w' && perms[1] != '-') || (perms[2] != 'x' && perms[2] != '-') ||
      (perms[3] != 'p' && perms[3] != 's')) {
    return FieldError(line_number, "perms", perms, "expected [r-][w-][x-][ps]");
  }
  r.readable = perms[0] == 'r';
  r.writable = perms[1] == 'w';
  r.executable = perms[2] == 'x';
  r.shared = perms[3] == 's';

  absl::string_view offset = NextToken(&rest);
  if (!ParseHex(offset, 16, &r.offset)) {
    return FieldError(line_number, "offset", offset, "expected hex");
  }

  absl::string_view dev = NextToken(&rest);
  size_t colon = dev.find(':');
  uint64_t major = 0, minor = 0;
  if (colon == absl::string_view::npos || !ParseHex(dev.substr(0, colon), 8, &major) ||
      !ParseHex(dev.substr(colon + 1), 8, &minor)) {
    return FieldError(line_number, "dev", dev, "expected hex <major>:<minor>");
  }
  r.dev_major = static_cast<uint32_t>(major);
  r.dev_minor = static_cast<uint32_t>(minor);

  absl::string_view inode = NextToken(&rest);
  if (!ParseDecimal(inode, &r.inode)) {
    return FieldError(line_number, "inode", inode, "expected decimal");
  }

  // What is left, after the padding NextToken skipped, is the path, spaces and all.
  absl::string_view path = rest;
  if (absl::EndsWith(path, kDeletedSuffix)) {
    r.deleted = true;
    path.remove_suffix(kDeletedSuffix.size());
  }
  r.path = std::string(path);
  r.kind = KindOf(r.path);
  return r;
}

absl::StatusOr<std::vector<MemoryRegion>> MapsParser::Parse(std::string_view whole) {
  absl::string_view text(whole.data(), whole.size());
  std::vector<MemoryRegion> regions;
  int line_number = 0;
  while (!text.empty()) {
    ++line_number;
    size_t nl = text.find('\n');
    absl::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == absl::string_view::npos ? text.size() : nl + 1);
    if (line.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parse maps line ", line_number, ": field address '': empty line"));
    }
    ASSIGN_OR_RETURN(MemoryRegion region,
                     ParseLine(std::string_view(line.data(), line.size()), line_number));
    regions.push_back(std::move(region));
  }
  return regions;
}

absl::StatusOr<std::vector<MemoryRegion>> MapsParser::Read(Os& os, pid_t pid) {
  std::string path =
      pid == 0 ? std::string("/proc/self/maps") : absl::StrCat("/proc/", pid, "/maps");
  ASSIGN_OR_RETURN(std::string text, os.ReadFile(path));
  absl::StatusOr<std::vector<MemoryRegion>> regions = Parse(text);
  if (!regions.ok()) {
    return absl::Status(regions.status().code(),
                        absl::StrCat("read ", path, ": ", regions.status().message()));
  }
  return regions;
}

}  // namespace procmig
