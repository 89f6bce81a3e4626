#include "cocostorage/common/base64.h"

#include <array>
#include <cstdint>

namespace cocostorage {
namespace {

constexpr char kStandardChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrlChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Encode(std::string_view data, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(data[k])); };
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (int shift : {18, 12, 6, 0}) out.push_back(alphabet[(v >> shift) & 63]);
  }
  const size_t rest = data.size() - i;
  if (rest == 0) return out;
  uint32_t v = byte(i) << 16;
  if (rest == 2) v |= byte(i + 1) << 8;
  out.push_back(alphabet[(v >> 18) & 63]);
  out.push_back(alphabet[(v >> 12) & 63]);
  if (rest == 2) out.push_back(alphabet[(v >> 6) & 63]);
  if (pad) out.append(rest == 2 ? "=" : "==");
  return out;
}

// 0..63 for a character of the alphabet, -1 for anything else.
using DecodeTable = std::array<int8_t, 256>;

constexpr DecodeTable MakeTable(const char* alphabet) {
  DecodeTable t{};
  for (auto& e : t) e = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
  return t;
}

constexpr DecodeTable kStandardTable = MakeTable(kStandardChars);
constexpr DecodeTable kUrlTable = MakeTable(kUrlChars);

}  // namespace

std::string Base64UrlEncode(std::string_view data) { return Encode(data, kUrlChars, true); }
std::string Base64Encode(std::string_view data) { return Encode(data, kStandardChars, true); }
std::string Base64UrlEncodeNoPad(std::string_view data) { return Encode(data, kUrlChars, false); }

StatusOr<std::string> Base64Decode(std::string_view text, Base64Alphabet alphabet, Base64Padding padding) {
  const DecodeTable& table = alphabet == Base64Alphabet::kStandard ? kStandardTable : kUrlTable;
  std::string_view body = text;
  if (padding == Base64Padding::kRequired) {
    if (text.size() % 4 != 0) return absl::InvalidArgumentError("base64: length is not a multiple of 4");
    size_t pads = 0;
    while (pads < 2 && pads < body.size() && body[body.size() - 1 - pads] == '=') ++pads;
    body.remove_suffix(pads);
    // One '=' must leave 3 characters in the last quantum, two must leave 2.
    if (pads > 0 && body.size() % 4 != 4 - pads) return absl::InvalidArgumentError("base64: misplaced padding");
  }
  if (body.size() % 4 == 1) return absl::InvalidArgumentError("base64: impossible length");
  std::string out;
  out.reserve(body.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : body) {
    const int8_t v = table[static_cast<unsigned char>(c)];
    if (v < 0) return absl::InvalidArgumentError("base64: character outside the alphabet");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
      acc &= (1u << bits) - 1;
    }
  }
  // 2 or 4 bits left over from a partial quantum must be zero.
  if (acc != 0) return absl::InvalidArgumentError("base64: non-canonical trailing bits");
  return out;
}

}  // namespace cocostorage
