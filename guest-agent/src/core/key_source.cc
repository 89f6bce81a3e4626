#include "core/key_source.h"

#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent {
namespace {

bool SegmentOk(std::string_view seg) {
  if (seg.empty()) return false;
  auto head = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  };
  if (!head(seg.front())) return false;
  for (char c : seg) {
    if (!head(c) && c != '.') return false;
  }
  return true;
}

}  // namespace

Status ValidateKbsResourceUri(std::string_view uri) {
  constexpr std::string_view kScheme = "kbs:///";
  auto bad = [&] {
    return absl::InvalidArgumentError(
        Cat("KBS resource URI ", Quoted(uri),
            " is not kbs:///<repo>/<type>/<tag> (segments [A-Za-z0-9_-][A-Za-z0-9_.-]*)"));
  };
  if (uri.size() > 256 || uri.substr(0, kScheme.size()) != kScheme) return bad();
  auto parts = Split(uri.substr(kScheme.size()), '/', /*skip_empty=*/false);
  if (parts.size() != 3) return bad();
  for (const auto& p : parts) {
    if (!SegmentOk(p)) return bad();
  }
  return OkStatus();
}

StatusOr<KeySource> KeySource::Kbs(std::string_view uri) {
  COCO_RETURN_IF_ERROR(ValidateKbsResourceUri(uri));
  return KeySource(Kind::kKbs, std::string(uri));
}

StatusOr<KeySource> KeySource::Parse(std::string_view text) {
  if (text == "ephemeral") return Ephemeral();
  return Kbs(text);
}

}  // namespace cocostorage::agent
