#include "core/text.h"

namespace cocostorage::agent {

std::string Quoted(std::string_view s, size_t max) {
  std::string out = "\"";
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (s.size() > max) out += "...";
  return out + "\"";
}

}  // namespace cocostorage::agent
