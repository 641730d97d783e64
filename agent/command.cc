#include "command.h"

#include <algorithm>
#include <cstdio>

namespace procmig::agent {

ArgParser::ArgParser(std::string_view command, std::vector<std::string_view> flags,
                     std::vector<std::string_view> valued)
    : command_(command), flags_(std::move(flags)), valued_(std::move(valued)) {}

bool ArgParser::Parse(std::span<const std::string_view> args) {
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (options_done || !a.starts_with("--")) {
      positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    std::string_view name = a.substr(2);
    std::optional<std::string_view> inline_value;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (std::find(flags_.begin(), flags_.end(), name) != flags_.end()) {
      if (inline_value) {
        Fail(command_, std::string("option --") + std::string(name) + " takes no value", 2);
        return false;
      }
      seen_flags_.push_back(name);
    } else if (std::find(valued_.begin(), valued_.end(), name) != valued_.end()) {
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          Fail(command_, std::string("option --") + std::string(name) + " needs a value", 2);
          return false;
        }
        inline_value = args[++i];
      }
      values_.emplace_back(name, *inline_value);
    } else {
      Fail(command_, std::string("unknown option --") + std::string(name) + " (see --help)", 2);
      return false;
    }
  }
  return true;
}

bool ArgParser::Has(std::string_view flag) const {
  return std::find(seen_flags_.begin(), seen_flags_.end(), flag) != seen_flags_.end();
}

std::optional<std::string_view> ArgParser::Value(std::string_view option) const {
  std::optional<std::string_view> result;
  for (const auto& [name, value] : values_) {
    if (name == option) result = value;  // the last one wins, as in most tools
  }
  return result;
}

int PrintHelp(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int Fail(std::string_view command, std::string_view message, int status) {
  std::fprintf(stderr, "procmig %.*s: %.*s\n", static_cast<int>(command.size()), command.data(),
               static_cast<int>(message.size()), message.data());
  return status;
}

}  // namespace procmig::agent
