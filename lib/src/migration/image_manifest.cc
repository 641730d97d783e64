#include "migration/image_manifest.h"

#include <cctype>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace procmig {
namespace {

using absl::string_view;

constexpr char kHeader[] = "procmig-image";

std::string PercentEncode(string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || c == '%' || c == '=') {
      absl::StrAppendFormat(&out, "%%%02X", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

bool PercentDecode(string_view s, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out->push_back(s[i]);
      continue;
    }
    uint32_t v = 0;
    if (i + 2 >= s.size()) return false;
    if (!absl::SimpleHexAtoi(s.substr(i + 1, 2), &v)) return false;
    out->push_back(static_cast<char>(v));
    i += 2;
  }
  return true;
}

absl::Status Bad(size_t line, string_view why) {
  return absl::DataLossError(absl::StrCat("parse image manifest line ", line, ": ", why));
}

// "key=value" with the expected key; returns the value.
bool Field(string_view token, string_view key, string_view* value) {
  if (token.size() <= key.size() || !absl::StartsWith(token, key) || token[key.size()] != '=') {
    return false;
  }
  *value = token.substr(key.size() + 1);
  return true;
}

bool Dec(string_view token, string_view key, uint64_t* out) {
  string_view v;
  return Field(token, key, &v) && absl::SimpleAtoi(v, out);
}

bool Hex(string_view token, string_view key, uint64_t* out) {
  string_view v;
  if (!Field(token, key, &v) || !absl::StartsWith(v, "0x") || v.size() < 3) return false;
  return absl::SimpleHexAtoi(v.substr(2), out);
}

}  // namespace

const char* DigestStateName(DigestState s) {
  switch (s) {
    case DigestState::kNone:
      return "none";
    case DigestState::kOk:
      return "ok";
    case DigestState::kMismatch:
      return "mismatch";
  }
  return "unknown";
}

std::string BlockFileName(uint32_t id) { return absl::StrCat("block-", id, ".bin"); }

std::string ImageBlock::FileName() const { return BlockFileName(id); }

std::string SessionIdHex(const std::array<uint8_t, 16>& id) {
  std::string s;
  for (uint8_t b : id) absl::StrAppendFormat(&s, "%02x", b);
  return s;
}

bool ParseSessionIdHex(absl::string_view hex, std::array<uint8_t, 16>* out) {
  if (hex.size() != 32) return false;
  for (size_t i = 0; i < 16; ++i) {
    uint32_t v = 0;
    if (!absl::SimpleHexAtoi(hex.substr(2 * i, 2), &v)) return false;
    (*out)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

std::string EncodeManifest(const ImageManifest& m) {
  std::string out = absl::StrCat(kHeader, " ", kImageVersion, "\n");
  absl::StrAppend(&out, "page_size ", m.page_size, "\n");
  absl::StrAppend(&out, "session ", SessionIdHex(m.session_id), "\n");
  absl::StrAppend(&out, "channels ", m.channels, "\n");
  absl::StrAppend(&out, "iterations ", m.iterations, "\n");
  absl::StrAppendFormat(&out, "process_state %d crc32c=0x%08x\n", m.process_state_length,
                        m.process_state_crc32c);
  const ReceiveStats& s = m.stats;
  absl::StrAppend(&out, "stats pages=", s.pages, " zero_pages=", s.zero_pages,
                  " raw_pages=", s.raw_pages, " xbzrle_pages=", s.xbzrle_pages,
                  " zlib_pages=", s.zlib_pages, " torn_pages=", s.torn_pages, " bytes=", s.bytes,
                  " duration_ms=", s.duration_ms, "\n");
  for (const ImageBlock& b : m.blocks) {
    absl::StrAppendFormat(
        &out,
        "block %d start=0x%x length=%d flags=0x%x stored_pages=%d crc32c=0x%08x "
        "digest=%s sent=%s name=%s\n",
        b.id, b.start, b.length, b.flags, b.stored_pages, b.crc32c, DigestStateName(b.digest),
        b.sent_digest.empty() ? "-" : PercentEncode(b.sent_digest), PercentEncode(b.name));
  }
  out += "end\n";
  return out;
}

absl::StatusOr<ImageManifest> ParseManifest(std::string_view text_in) {
  string_view text(text_in.data(), text_in.size());
  if (text.size() > kMaxManifestBytes) {
    return absl::DataLossError(absl::StrCat("parse image manifest: ", text.size(),
                                            " bytes is more than the limit of ",
                                            kMaxManifestBytes));
  }
  ImageManifest m;
  std::vector<string_view> lines = absl::StrSplit(text, '\n');
  if (lines.empty() || !lines.back().empty()) {
    return absl::DataLossError("parse image manifest: does not end with a newline (truncated?)");
  }
  lines.pop_back();
  enum Seen { kPage = 1, kSession = 2, kChannels = 4, kIter = 8, kState = 16, kStats = 32 };
  int seen = 0;
  bool ended = false;
  for (size_t n = 0; n < lines.size(); ++n) {
    size_t ln = n + 1;
    if (ended) return Bad(ln, "text after 'end'");
    std::vector<string_view> t = absl::StrSplit(lines[n], ' ');
    string_view key = t[0];
    uint64_t v = 0;
    if (n == 0) {
      if (t.size() != 2 || key != kHeader) return Bad(ln, "not a procmig image manifest");
      if (!absl::SimpleAtoi(t[1], &v) || v != kImageVersion) {
        return Bad(ln, absl::StrCat("unsupported image version '", t[1], "' (this build reads ",
                                    kImageVersion, ")"));
      }
      continue;
    }
    if (key == "end" && t.size() == 1) {
      ended = true;
    } else if (key == "page_size" && t.size() == 2 && absl::SimpleAtoi(t[1], &v) && v >= 4096 &&
               v <= 65536 && (v & (v - 1)) == 0) {
      m.page_size = static_cast<uint32_t>(v);
      seen |= kPage;
    } else if (key == "session" && t.size() == 2 && ParseSessionIdHex(t[1], &m.session_id)) {
      seen |= kSession;
    } else if (key == "channels" && t.size() == 2 && absl::SimpleAtoi(t[1], &v) && v >= 1 &&
               v <= 64) {
      m.channels = static_cast<uint32_t>(v);
      seen |= kChannels;
    } else if (key == "iterations" && t.size() == 2 && absl::SimpleAtoi(t[1], &m.iterations)) {
      seen |= kIter;
    } else if (key == "process_state" && t.size() == 3 &&
               absl::SimpleAtoi(t[1], &m.process_state_length) && Hex(t[2], "crc32c", &v) &&
               v <= 0xffffffffu) {
      m.process_state_crc32c = static_cast<uint32_t>(v);
      seen |= kState;
    } else if (key == "stats" && t.size() == 9) {
      ReceiveStats& s = m.stats;
      if (!Dec(t[1], "pages", &s.pages) || !Dec(t[2], "zero_pages", &s.zero_pages) ||
          !Dec(t[3], "raw_pages", &s.raw_pages) || !Dec(t[4], "xbzrle_pages", &s.xbzrle_pages) ||
          !Dec(t[5], "zlib_pages", &s.zlib_pages) || !Dec(t[6], "torn_pages", &s.torn_pages) ||
          !Dec(t[7], "bytes", &s.bytes) || !Dec(t[8], "duration_ms", &s.duration_ms)) {
        return Bad(ln, "malformed stats");
      }
      seen |= kStats;
    } else if (key == "block" && t.size() == 10) {
      ImageBlock b;
      uint64_t id = 0, flags = 0, crc = 0;
      string_view digest, sent, name;
      if (!absl::SimpleAtoi(t[1], &id) || id == 0 || id > 0xffffffffu ||
          !Hex(t[2], "start", &b.start) || !Dec(t[3], "length", &b.length) || b.length == 0 ||
          b.length % m.page_size != 0 || !Hex(t[4], "flags", &flags) || flags > 0xffffffffu ||
          !Dec(t[5], "stored_pages", &b.stored_pages) || b.stored_pages > b.length / m.page_size ||
          !Hex(t[6], "crc32c", &crc) || crc > 0xffffffffu || !Field(t[7], "digest", &digest) ||
          !Field(t[8], "sent", &sent) || !Field(t[9], "name", &name) ||
          !PercentDecode(name, &b.name)) {
        return Bad(ln, "malformed block line");
      }
      if (!(seen & kPage)) return Bad(ln, "block before page_size");
      b.id = static_cast<uint32_t>(id);
      b.flags = static_cast<uint32_t>(flags);
      b.crc32c = static_cast<uint32_t>(crc);
      if (digest == "none") {
        b.digest = DigestState::kNone;
      } else if (digest == "ok") {
        b.digest = DigestState::kOk;
      } else if (digest == "mismatch") {
        b.digest = DigestState::kMismatch;
      } else {
        return Bad(ln, absl::StrCat("unknown digest state '", digest, "'"));
      }
      if (sent != "-" && !PercentDecode(sent, &b.sent_digest)) return Bad(ln, "malformed sent=");
      for (const ImageBlock& o : m.blocks) {
        if (o.id == b.id) return Bad(ln, absl::StrCat("block ", b.id, " listed twice"));
      }
      m.blocks.push_back(std::move(b));
    } else {
      return Bad(ln, absl::StrCat("unexpected '", lines[n].substr(0, 40), "'"));
    }
  }
  if (lines.empty()) return absl::DataLossError("parse image manifest: empty");
  if (!ended) return absl::DataLossError("parse image manifest: no 'end' line (truncated?)");
  if (seen != (kPage | kSession | kChannels | kIter | kState | kStats)) {
    return absl::DataLossError("parse image manifest: a required line is missing");
  }
  return m;
}

}  // namespace procmig
