#include "procmig/control.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace procmig {
namespace {

constexpr std::array<std::pair<MigrationPhase, absl::string_view>, 8> kPhases = {{
    {MigrationPhase::kIdle, "idle"},
    {MigrationPhase::kSetup, "setup"},
    {MigrationPhase::kBulk, "bulk"},
    {MigrationPhase::kIterate, "iterate"},
    {MigrationPhase::kStopAndCopy, "stop-and-copy"},
    {MigrationPhase::kDone, "done"},
    {MigrationPhase::kFailed, "failed"},
    {MigrationPhase::kCancelled, "cancelled"},
}};

constexpr std::array<std::pair<ControlVerb, absl::string_view>, 7> kVerbs = {{
    {ControlVerb::kMigrate, "MIGRATE"},
    {ControlVerb::kStatus, "STATUS"},
    {ControlVerb::kCancel, "CANCEL"},
    {ControlVerb::kStats, "STATS"},
    {ControlVerb::kDone, "DONE"},
    {ControlVerb::kError, "ERROR"},
    {ControlVerb::kOk, "OK"},
}};

// The phase's name, as the line format and the JSON spell it ("unknown" for a value outside
// the enum, which a decoder never produces).
absl::string_view PhaseToken(MigrationPhase p) {
  for (const auto& [phase, name] : kPhases) {
    if (phase == p) return name;
  }
  return "unknown";
}

// The numeric statistics, by wire name. One table drives encoding, decoding and JSON.
constexpr std::array<std::pair<absl::string_view, uint64_t MigrationStats::*>, 26> kStatFields = {{
    {"iteration", &MigrationStats::iteration},
    {"total_bytes", &MigrationStats::total_bytes},
    {"remaining_bytes", &MigrationStats::remaining_bytes},
    {"transferred_bytes", &MigrationStats::transferred_bytes},
    {"normal_pages", &MigrationStats::normal_pages},
    {"zero_pages", &MigrationStats::zero_pages},
    {"unread_zero_pages", &MigrationStats::unread_zero_pages},
    {"xbzrle_bytes", &MigrationStats::xbzrle_bytes},
    {"xbzrle_pages", &MigrationStats::xbzrle_pages},
    {"xbzrle_cache_misses", &MigrationStats::xbzrle_cache_misses},
    {"xbzrle_overflows", &MigrationStats::xbzrle_overflows},
    {"compressed_pages", &MigrationStats::compressed_pages},
    {"compressed_bytes", &MigrationStats::compressed_bytes},
    {"compress_skipped_pages", &MigrationStats::compress_skipped_pages},
    {"dirty_pages_rate", &MigrationStats::dirty_pages_rate},
    {"throughput_bps", &MigrationStats::throughput_bps},
    {"expected_downtime_ms", &MigrationStats::expected_downtime_ms},
    {"downtime_ms", &MigrationStats::downtime_ms},
    {"ack_wait_ms", &MigrationStats::ack_wait_ms},
    {"park_us", &MigrationStats::park_us},
    {"sync_us", &MigrationStats::sync_us},
    {"spawn_us", &MigrationStats::spawn_us},
    {"final_send_us", &MigrationStats::final_send_us},
    {"final_pages", &MigrationStats::final_pages},
    {"setup_ms", &MigrationStats::setup_ms},
    {"total_ms", &MigrationStats::total_ms},
}};

bool IsPlain(char c) {
  return c > 0x20 && c < 0x7f && c != '%' && c != '=' && c != '"' && c != '\\';
}

void AppendEncoded(std::string* out, absl::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : v) {
    if (IsPlain(c)) {
      out->push_back(c);
    } else {
      auto u = static_cast<unsigned char>(c);
      out->push_back('%');
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 15]);
    }
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

absl::StatusOr<std::string> Decoded(absl::string_view key, absl::string_view v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '%') {
      out.push_back(v[i]);
      continue;
    }
    int hi = i + 2 < v.size() ? HexValue(v[i + 1]) : -1;
    int lo = i + 2 < v.size() ? HexValue(v[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("control line: bad percent escape in the value of ", key));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

template <typename T>
absl::Status ParseNumber(absl::string_view key, absl::string_view v, T* out) {
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  if (ec != std::errc() || end != v.data() + v.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("control line: ", key, "=", v, " is not a number in range"));
  }
  return absl::OkStatus();
}

absl::Status ParseBool(absl::string_view key, absl::string_view v, bool* out) {
  if (v != "0" && v != "1") {
    return absl::InvalidArgumentError(
        absl::StrCat("control line: ", key, "=", v, " is not 0 or 1"));
  }
  *out = v == "1";
  return absl::OkStatus();
}

void Put(std::string* out, absl::string_view key, absl::string_view value) {
  absl::StrAppend(out, " ", key, "=");
  AppendEncoded(out, value);
}
void Put(std::string* out, absl::string_view key, uint64_t value) {
  absl::StrAppend(out, " ", key, "=", value);
}

void EncodeOptions(const MigrationOptions& o, std::string* out) {
  Put(out, "mode", o.mode == MigrationMode::kMigrate ? "migrate" : "checkpoint");
  Put(out, "target", o.target);
  Put(out, "leave_running", o.leave_running);
  Put(out, "max_bandwidth", o.max_bandwidth);
  Put(out, "downtime_limit_ms", o.downtime_limit_ms);
  Put(out, "final_timeout_ms", o.final_timeout_ms);
  Put(out, "max_iterations", o.max_iterations);
  Put(out, "xbzrle", o.xbzrle);
  Put(out, "xbzrle_cache_bytes", o.xbzrle_cache_bytes);
  Put(out, "compress_level", static_cast<uint64_t>(o.compress_level));
  Put(out, "compress_threads", static_cast<uint64_t>(o.compress_threads));
  Put(out, "compress_always", o.compress_always);
  Put(out, "channels", static_cast<uint64_t>(o.channels));
  Put(out, "tracker", o.tracker);
  Put(out, "transport", o.transport);
  Put(out, "auto_converge", o.auto_converge);
  Put(out, "verify_final", o.verify_final);
}

absl::Status DecodeOption(absl::string_view key, const std::string& v, MigrationOptions* o) {
  if (key == "mode") {
    if (v == "migrate") {
      o->mode = MigrationMode::kMigrate;
    } else if (v == "checkpoint") {
      o->mode = MigrationMode::kCheckpoint;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("control line: unknown mode ", v));
    }
    return absl::OkStatus();
  }
  if (key == "target") return (o->target = v, absl::OkStatus());
  if (key == "tracker") return (o->tracker = v, absl::OkStatus());
  if (key == "transport") return (o->transport = v, absl::OkStatus());
  if (key == "leave_running") return ParseBool(key, v, &o->leave_running);
  if (key == "xbzrle") return ParseBool(key, v, &o->xbzrle);
  if (key == "auto_converge") return ParseBool(key, v, &o->auto_converge);
  if (key == "verify_final") return ParseBool(key, v, &o->verify_final);
  if (key == "compress_always") return ParseBool(key, v, &o->compress_always);
  if (key == "max_bandwidth") return ParseNumber(key, v, &o->max_bandwidth);
  if (key == "downtime_limit_ms") return ParseNumber(key, v, &o->downtime_limit_ms);
  if (key == "final_timeout_ms") return ParseNumber(key, v, &o->final_timeout_ms);
  if (key == "max_iterations") return ParseNumber(key, v, &o->max_iterations);
  if (key == "xbzrle_cache_bytes") return ParseNumber(key, v, &o->xbzrle_cache_bytes);
  if (key == "compress_level") return ParseNumber(key, v, &o->compress_level);
  if (key == "compress_threads") return ParseNumber(key, v, &o->compress_threads);
  if (key == "channels") return ParseNumber(key, v, &o->channels);
  return absl::InvalidArgumentError(absl::StrCat("control line: unknown option key ", key));
}

void EncodeStats(const MigrationStats& s, std::string* out) {
  Put(out, "phase", PhaseToken(s.phase));
  for (const auto& [name, field] : kStatFields) Put(out, name, s.*field);
  Put(out, "throttle_percent", s.throttle_percent);
}

absl::Status DecodeStat(absl::string_view key, const std::string& v, MigrationStats* s) {
  if (key == "phase") {
    for (const auto& [phase, name] : kPhases) {
      if (name == v) return (s->phase = phase, absl::OkStatus());
    }
    return absl::InvalidArgumentError(absl::StrCat("control line: unknown phase ", v));
  }
  if (key == "throttle_percent") return ParseNumber(key, v, &s->throttle_percent);
  for (const auto& [name, field] : kStatFields) {
    if (name == key) return ParseNumber(key, v, &(s->*field));
  }
  return absl::InvalidArgumentError(absl::StrCat("control line: unknown stats key ", key));
}

}  // namespace

size_t EncodeDoneNoAlloc(const MigrationStats& stats, char* buf, size_t cap) {
  size_t n = 0;
  bool fits = true;
  auto put = [&](absl::string_view text) {
    if (n + text.size() > cap) {
      fits = false;
      return;
    }
    memcpy(buf + n, text.data(), text.size());
    n += text.size();
  };
  auto num = [&](absl::string_view key, uint64_t v) {
    char digits[20];
    size_t i = sizeof digits;
    do {
      digits[--i] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    put(" ");
    put(key);
    put("=");
    put(absl::string_view(digits + i, sizeof digits - i));
  };
  put("DONE phase=");
  put(PhaseToken(stats.phase));
  for (const auto& [name, field] : kStatFields) num(name, stats.*field);
  num("throttle_percent", stats.throttle_percent);
  put("\n");
  return fits ? n : 0;
}

absl::Status MigrationOptions::Validate() const {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("migration options: ", what));
  };
  if (target.empty()) return bad("no target (HOST:PORT, unix:/path or a directory)");
  if (leave_running && mode != MigrationMode::kCheckpoint) {
    return bad("leave_running is only for a checkpoint");
  }
  if (downtime_limit_ms == 0) return bad("downtime limit must be at least 1 ms");
  if (max_iterations == 0) return bad("max iterations must be at least 1");
  if (final_timeout_ms < 100 || final_timeout_ms > 3'600'000) {
    return bad("final timeout must be 100 ms .. 1 hour");
  }
  if (xbzrle && xbzrle_cache_bytes < (1u << 20)) return bad("xbzrle cache must be at least 1 MiB");
  if (compress_level < 0 || compress_level > 9) return bad("compress level must be 0..9");
  if (compress_threads < 1 || compress_threads > 64) return bad("compress threads must be 1..64");
  if (channels < 1 || channels > 16) return bad("channels must be 1..16");
  constexpr absl::string_view kTrackers[] = {"auto",    "pagemap-scan", "soft-dirty",
                                             "uffd-wp", "mprotect",     "full"};
  if (std::find(std::begin(kTrackers), std::end(kTrackers), tracker) == std::end(kTrackers)) {
    return bad(absl::StrCat("unknown tracker '", tracker,
                            "' (auto, pagemap-scan, soft-dirty, uffd-wp, mprotect, full)"));
  }
  if (transport != "auto" && transport != "io_uring" && transport != "posix") {
    return bad(absl::StrCat("unknown transport '", transport, "' (auto, io_uring, posix)"));
  }
  return absl::OkStatus();
}

std::string_view PhaseName(MigrationPhase p) {
  absl::string_view name = PhaseToken(p);
  return {name.data(), name.size()};
}

absl::Status ControlMessage::ToStatus() const {
  if (verb != ControlVerb::kError) return absl::OkStatus();
  auto code = static_cast<absl::StatusCode>(error_code);
  if (code == absl::StatusCode::kOk) code = absl::StatusCode::kUnknown;
  return absl::Status(code, error_message);
}

ControlMessage ErrorReply(const absl::Status& status) {
  ControlMessage m;
  m.verb = ControlVerb::kError;
  m.error_code = static_cast<int>(status.code());
  m.error_message = std::string(status.message());
  return m;
}

std::string EncodeControl(const ControlMessage& m) {
  std::string out;
  for (const auto& [verb, name] : kVerbs) {
    if (verb == m.verb) out = std::string(name);
  }
  switch (m.verb) {
    case ControlVerb::kMigrate:
      EncodeOptions(m.options, &out);
      break;
    case ControlVerb::kStats:
    case ControlVerb::kDone:
      EncodeStats(m.stats, &out);
      break;
    case ControlVerb::kError:
      Put(&out, "code", static_cast<uint64_t>(m.error_code));
      Put(&out, "message", m.error_message);
      break;
    case ControlVerb::kStatus:
    case ControlVerb::kCancel:
    case ControlVerb::kOk:
      break;
  }
  out.push_back('\n');
  return out;
}

absl::StatusOr<ControlMessage> DecodeControl(std::string_view whole_line) {
  absl::string_view line(whole_line.data(), whole_line.size());
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.size() > kMaxControlLine) {
    return absl::InvalidArgumentError(
        absl::StrCat("control line: ", line.size(), " bytes, over the limit of ", kMaxControlLine));
  }
  std::vector<absl::string_view> tokens;
  for (size_t pos = 0; pos <= line.size();) {
    size_t sp = line.find(' ', pos);
    if (sp == absl::string_view::npos) sp = line.size();
    if (sp == pos) return absl::InvalidArgumentError("control line: empty token");
    tokens.push_back(line.substr(pos, sp - pos));
    pos = sp + 1;
  }
  ControlMessage m;
  bool known = false;
  for (const auto& [verb, name] : kVerbs) {
    if (name == tokens[0]) {
      m.verb = verb;
      known = true;
    }
  }
  if (!known)
    return absl::InvalidArgumentError(absl::StrCat("control line: unknown verb ", tokens[0]));
  for (size_t i = 1; i < tokens.size(); ++i) {
    size_t eq = tokens[i].find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("control line: token ", tokens[i], " has no '='"));
    }
    absl::string_view key = tokens[i].substr(0, eq);
    auto value = Decoded(key, tokens[i].substr(eq + 1));
    if (!value.ok()) return value.status();
    absl::Status st;
    switch (m.verb) {
      case ControlVerb::kMigrate:
        st = DecodeOption(key, *value, &m.options);
        break;
      case ControlVerb::kStats:
      case ControlVerb::kDone:
        st = DecodeStat(key, *value, &m.stats);
        break;
      case ControlVerb::kError:
        if (key == "code") {
          st = ParseNumber(key, *value, &m.error_code);
        } else if (key == "message") {
          m.error_message = *value;
        } else {
          st = absl::InvalidArgumentError(absl::StrCat("control line: unknown error key ", key));
        }
        break;
      default:
        st = absl::InvalidArgumentError(
            absl::StrCat("control line: ", tokens[0], " takes no arguments"));
    }
    if (!st.ok()) return st;
  }
  return m;
}

std::string StatsToJson(const MigrationStats& s) {
  std::string out = absl::StrCat("{\"phase\": \"", PhaseToken(s.phase), "\"");
  for (const auto& [name, field] : kStatFields)
    absl::StrAppend(&out, ", \"", name, "\": ", s.*field);
  absl::StrAppend(&out, ", \"throttle_percent\": ", s.throttle_percent, "}");
  return out;
}

}  // namespace procmig
