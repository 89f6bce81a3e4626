#include "keys/key_provider.h"

#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

StatusOr<SecureBuffer> EphemeralKeyProvider::GetKey(const KeySource& source, size_t bytes) {
  if (!source.ephemeral()) return absl::InternalError("ephemeral key provider asked for a KBS key");
  return SecureBuffer::Random(bytes);
}

StatusOr<SecureBuffer> KeyProviderRouter::GetKey(const KeySource& source, size_t bytes) {
  KeyProvider* p = source.ephemeral() ? ephemeral_.get() : kbs_.get();
  if (p == nullptr) {
    return absl::UnimplementedError(
        Cat("KBS-released keys (", source.kbs_uri(), ") are not supported by this agent version"));
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer key, p->GetKey(source, bytes));
  if (key.size() != bytes) {
    return absl::FailedPreconditionError(
        Cat("key for ", source.ToString(), " has ", key.size(), " bytes; the cipher suite needs exactly ", bytes));
  }
  return key;
}

}  // namespace cocostorage::agent
