// Minimal command-line parsing: --name=value and --name value, plus boolean
// --name. Unknown flags are an error so typos in a DaemonSet fail loudly.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage {

class Flags {
 public:
  // `known` lists accepted flag names (without dashes); `booleans` those that take no value.
  Flags(std::set<std::string> known, std::set<std::string> booleans = {});
  Status Parse(int argc, const char* const* argv);

  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  StatusOr<long long> GetInt(const std::string& name, long long def) const;
  bool GetBool(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::set<std::string> known_;
  std::set<std::string> booleans_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace cocostorage
