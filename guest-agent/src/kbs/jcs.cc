#include "kbs/jcs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "cocostorage/common/strings.h"

namespace cocostorage::agent::kbs {
namespace {

// Decodes `s` as strict UTF-8 (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF) and appends its UTF-16 code units to `out` when
// `out` is not null.
Status CheckUtf8(std::string_view s, std::u16string* out) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    uint32_t cp = 0;
    size_t len = 0;
    uint32_t min = 0;
    if (b0 < 0x80) {
      cp = b0;
      len = 1;
    } else if ((b0 & 0xe0) == 0xc0) {
      cp = b0 & 0x1fu;
      len = 2;
      min = 0x80;
    } else if ((b0 & 0xf0) == 0xe0) {
      cp = b0 & 0x0fu;
      len = 3;
      min = 0x800;
    } else if ((b0 & 0xf8) == 0xf0) {
      cp = b0 & 0x07u;
      len = 4;
      min = 0x10000;
    } else {
      return absl::InvalidArgumentError(Cat("JCS: invalid UTF-8 lead byte at offset ", i));
    }
    if (s.size() - i < len) return absl::InvalidArgumentError(Cat("JCS: truncated UTF-8 sequence at offset ", i));
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) return absl::InvalidArgumentError(Cat("JCS: invalid UTF-8 sequence at offset ", i));
      cp = (cp << 6) | (b & 0x3fu);
    }
    if (cp < min) return absl::InvalidArgumentError(Cat("JCS: overlong UTF-8 sequence at offset ", i));
    if (cp >= 0xd800 && cp <= 0xdfff) return absl::InvalidArgumentError(Cat("JCS: UTF-8 surrogate at offset ", i));
    if (cp > 0x10ffff) return absl::InvalidArgumentError(Cat("JCS: code point beyond U+10FFFF at offset ", i));
    if (out != nullptr) {
      if (cp < 0x10000) {
        out->push_back(static_cast<char16_t>(cp));
      } else {
        cp -= 0x10000;
        out->push_back(static_cast<char16_t>(0xd800 + (cp >> 10)));
        out->push_back(static_cast<char16_t>(0xdc00 + (cp & 0x3ff)));
      }
    }
    i += len;
  }
  return OkStatus();
}

// RFC 8785 §3.2.2.2: the JSON string literal of `s`.
Status AppendString(std::string_view s, std::string& out) {
  COCO_RETURN_IF_ERROR(CheckUtf8(s, nullptr));
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default: {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20) {
          out.append("\\u00");
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 0xf]);
        } else {
          out.push_back(c);
        }
      }
    }
  }
  out.push_back('"');
  return OkStatus();
}

// ECMAScript Number.prototype.toString (ECMA-262 Number::toString, radix 10)
// for a finite double: the shortest round-trip digits from std::to_chars,
// laid out as the specification's four cases.
StatusOr<std::string> FormatNumber(double v) {
  if (!std::isfinite(v)) return absl::InvalidArgumentError("JCS: NaN and infinity have no JSON form");
  if (v == 0) return std::string("0");  // both +0 and -0
  // d.ddde±x: the shortest digits that round-trip, in scientific form.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), std::fabs(v), std::chars_format::scientific);
  if (ec != std::errc()) return absl::InternalError("JCS: to_chars failed");
  const std::string_view sci(buf, static_cast<size_t>(end - buf));
  const size_t e_pos = sci.find('e');
  if (e_pos == std::string_view::npos) return absl::InternalError("JCS: to_chars gave no exponent");
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  int exp10 = 0;
  const std::string_view exp_text = sci.substr(e_pos + 1);
  const char* exp_begin = exp_text.data() + (exp_text.front() == '+' ? 1 : 0);
  if (std::from_chars(exp_begin, exp_text.data() + exp_text.size(), exp10).ec != std::errc()) {
    return absl::InternalError("JCS: unparsable exponent from to_chars");
  }
  // ECMA-262's k (number of digits) and n (value = 0.digits × 10^n).
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;
  std::string out = v < 0 ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n));
    out.push_back('.');
    out += digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out += digits;
  } else {
    out.push_back(digits[0]);
    if (k > 1) {
      out.push_back('.');
      out += digits.substr(1);
    }
    out.push_back('e');
    out.push_back(n - 1 < 0 ? '-' : '+');
    out += std::to_string(n - 1 < 0 ? 1 - n : n - 1);
  }
  return out;
}

// Integers beyond 2^53 would not survive the verifier's IEEE-754 parse.
constexpr uint64_t kMaxExactInteger = uint64_t{1} << 53;

Status Append(const nlohmann::json& value, std::string& out, int depth) {
  // nlohmann's parser recurses too; this bound only keeps hostile documents
  // built in code from exhausting the stack.
  if (depth > 512) return absl::InvalidArgumentError("JCS: nesting deeper than 512");
  using Type = nlohmann::json::value_t;
  switch (value.type()) {
    case Type::null:
      out.append("null");
      return OkStatus();
    case Type::boolean:
      out.append(value.get_ref<const nlohmann::json::boolean_t&>() ? "true" : "false");
      return OkStatus();
    case Type::number_integer: {
      const int64_t v = value.get_ref<const nlohmann::json::number_integer_t&>();
      const uint64_t magnitude = v < 0 ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
      if (magnitude > kMaxExactInteger) {
        return absl::InvalidArgumentError(Cat("JCS: integer ", v, " is not exactly representable as a double"));
      }
      out.append(std::to_string(v));
      return OkStatus();
    }
    case Type::number_unsigned: {
      const uint64_t v = value.get_ref<const nlohmann::json::number_unsigned_t&>();
      if (v > kMaxExactInteger) {
        return absl::InvalidArgumentError(Cat("JCS: integer ", v, " is not exactly representable as a double"));
      }
      out.append(std::to_string(v));
      return OkStatus();
    }
    case Type::number_float: {
      COCO_ASSIGN_OR_RETURN(std::string text, FormatNumber(value.get_ref<const nlohmann::json::number_float_t&>()));
      out += text;
      return OkStatus();
    }
    case Type::string:
      return AppendString(value.get_ref<const nlohmann::json::string_t&>(), out);
    case Type::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& element : value.get_ref<const nlohmann::json::array_t&>()) {
        if (!first) out.push_back(',');
        first = false;
        COCO_RETURN_IF_ERROR(Append(element, out, depth + 1));
      }
      out.push_back(']');
      return OkStatus();
    }
    case Type::object: {
      // nlohmann orders members by UTF-8 bytes (code points); JCS wants UTF-16
      // code units, which differs once a name holds a character above U+FFFF.
      const auto& members = value.get_ref<const nlohmann::json::object_t&>();
      std::vector<std::pair<std::u16string, const nlohmann::json::object_t::value_type*>> sorted;
      sorted.reserve(members.size());
      for (const auto& member : members) {
        std::u16string key16;
        COCO_RETURN_IF_ERROR(CheckUtf8(member.first, &key16));
        sorted.emplace_back(std::move(key16), &member);
      }
      std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out.push_back('{');
      bool first = true;
      for (const auto& [key16, member] : sorted) {
        if (!first) out.push_back(',');
        first = false;
        COCO_RETURN_IF_ERROR(AppendString(member->first, out));
        out.push_back(':');
        COCO_RETURN_IF_ERROR(Append(member->second, out, depth + 1));
      }
      out.push_back('}');
      return OkStatus();
    }
    case Type::binary:
      return absl::InvalidArgumentError("JCS: binary values have no JSON form");
    case Type::discarded:
      return absl::InvalidArgumentError("JCS: discarded value (a failed parse)");
  }
  return absl::InvalidArgumentError("JCS: unknown JSON value type");
}

}  // namespace

StatusOr<std::string> Canonicalize(const nlohmann::json& value) {
  std::string out;
  COCO_RETURN_IF_ERROR(Append(value, out, 0));
  return out;
}

}  // namespace cocostorage::agent::kbs
