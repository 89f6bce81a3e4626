#include "keys/key_provider.h"

#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

StatusOr<SecureBuffer> EphemeralKeyProvider::GetKey(const KeySource& source, size_t bytes) {
  if (!source.ephemeral()) return absl::InternalError("ephemeral key provider asked for a KBS key");
  return SecureBuffer::Random(bytes);
}

Status CheckKeySize(const KeySource& source, size_t have, size_t want) {
  if (have == want) return OkStatus();
  return absl::FailedPreconditionError(Cat("resource ", source.ToString(), " holds ", have,
                                           " bytes; a volume key must be exactly ", want, " raw bytes"));
}

StatusOr<SecureBuffer> KeyProviderRouter::GetKey(const KeySource& source, size_t bytes) {
  KeyProvider* p = source.ephemeral() ? ephemeral_.get() : kbs_.get();
  if (p == nullptr) {
    return absl::UnimplementedError(
        Cat("KBS-released keys (", source.kbs_uri(), ") are not supported by this agent version"));
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer key, p->GetKey(source, bytes));
  COCO_RETURN_IF_ERROR(CheckKeySize(source, key.size(), bytes));
  return key;
}

}  // namespace cocostorage::agent
