#include "cocostorage/common/flags.h"

#include <charconv>

#include "cocostorage/common/strings.h"

namespace cocostorage {

Flags::Flags(std::set<std::string> known, std::set<std::string> booleans)
    : known_(std::move(known)), booleans_(std::move(booleans)) {
  for (const auto& b : booleans_) known_.insert(b);
}

Status Flags::Parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (!known_.count(name)) return absl::InvalidArgumentError(Cat("unknown flag --", name));
    if (booleans_.count(name)) {
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(Cat("flag --", name, " needs a value"));
      value = argv[++i];
    }
    values_[name] = value;
  }
  return OkStatus();
}

std::string Flags::Get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second;
}

StatusOr<long long> Flags::GetInt(const std::string& name, long long def) const {
  auto it = values_.find(name);
  if (it == values_.end()) return def;
  long long v = 0;
  auto [ptr, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (it->second.empty() || ec != std::errc() || ptr != it->second.data() + it->second.size()) {
    return absl::InvalidArgumentError(Cat("flag --", name, " wants an integer, got \"", it->second, "\""));
  }
  return v;
}

bool Flags::GetBool(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() && (it->second == "true" || it->second == "1" || it->second == "yes");
}

}  // namespace cocostorage
