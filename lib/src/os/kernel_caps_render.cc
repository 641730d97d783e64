// ToJson and ToTable for KernelCaps (declared in kernel_caps.h).
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "os/kernel_caps.h"

namespace procmig {
namespace {

// A JSON string literal (RFC 8259): quotes, backslash and control characters escaped; other
// bytes, UTF-8 included, pass through.
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

void AppendJsonList(std::string* out, absl::string_view key, const std::vector<Feature>& list,
                    bool last) {
  absl::StrAppend(out, "  ", JsonString(key), ": [");
  for (size_t i = 0; i < list.size(); ++i) {
    const Feature& f = list[i];
    absl::StrAppend(out, i == 0 ? "\n" : ",\n", "    {\"section\": ", JsonString(f.section),
                    ", \"name\": ", JsonString(f.name),
                    ", \"available\": ", f.available ? "true" : "false",
                    ", \"reason\": ", JsonString(f.reason), "}");
  }
  absl::StrAppend(out, list.empty() ? "]" : "\n  ]", last ? "\n" : ",\n");
}

void AppendRows(std::string* out, const std::vector<Feature>& list, size_t width) {
  std::string section;
  for (const Feature& f : list) {
    if (f.section != section) {
      section = f.section;
      absl::StrAppend(out, "\n", section, "\n");
    }
    absl::StrAppend(out, "  ", f.name, std::string(width - f.name.size(), ' '), "  ",
                    f.available ? "yes" : "no ", "  ", f.reason, "\n");
  }
}

}  // namespace

std::string ToJson(const KernelCaps& caps) {
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"kernel_release\": ", JsonString(caps.kernel_release), ",\n");
  absl::StrAppend(&out, "  \"page_size\": ", caps.page_size, ",\n");
  absl::StrAppend(&out, "  \"thp_mode\": ", JsonString(caps.thp_mode), ",\n");
  AppendJsonList(&out, "features", caps.features, false);
  AppendJsonList(&out, "dirty_backends", caps.dirty_backends, true);
  out += "}\n";
  return out;
}

std::string ToTable(const KernelCaps& caps) {
  size_t width = 0;
  for (const Feature& f : caps.features) width = std::max(width, f.name.size());
  for (const Feature& f : caps.dirty_backends) width = std::max(width, f.name.size());
  std::string out =
      absl::StrCat("kernel ", caps.kernel_release.empty() ? "(unknown)" : caps.kernel_release,
                   ", page size ", caps.page_size, ", transparent hugepages ",
                   caps.thp_mode.empty() ? "(none)" : caps.thp_mode, "\n");
  AppendRows(&out, caps.features, width);
  AppendRows(&out, caps.dirty_backends, width);
  return out;
}

}  // namespace procmig
