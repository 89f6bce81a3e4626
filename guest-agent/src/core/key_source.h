// Where a volume's key comes from: generated in the guest for this activation
// (ephemeral), or released by a Key Broker Service under a resource URI
// (persistent volumes). A typed value: the URI is checked once, here.
// Holds no secret (a KBS resource URI is a name).
#pragma once

#include <string>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage::agent {

class KeySource {
 public:
  enum class Kind { kEphemeral, kKbs };

  static KeySource Ephemeral() { return KeySource(Kind::kEphemeral, ""); }
  // kbs:///<repo>/<type>/<tag>, each segment [a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*
  // (trustee's resource path grammar), at most 256 bytes.
  static StatusOr<KeySource> Kbs(std::string_view uri);
  // "ephemeral" or a KBS URI (the record and wire spelling).
  static StatusOr<KeySource> Parse(std::string_view text);

  Kind kind() const { return kind_; }
  bool ephemeral() const { return kind_ == Kind::kEphemeral; }
  const std::string& kbs_uri() const { return uri_; }
  std::string ToString() const { return ephemeral() ? "ephemeral" : uri_; }
  bool operator==(const KeySource&) const = default;

 private:
  KeySource(Kind kind, std::string uri) : kind_(kind), uri_(std::move(uri)) {}
  Kind kind_ = Kind::kEphemeral;
  std::string uri_;
};

// Pure syntax check of a KBS resource URI (see KeySource::Kbs).
Status ValidateKbsResourceUri(std::string_view uri);

}  // namespace cocostorage::agent
