#include "keys/remote_key_providers.h"

#include <openssl/crypto.h>

#include <cstring>

#include "cdh/api.pb.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/ttrpc/client.h"

namespace cocostorage::agent {
namespace {

// Wipes a std::string that held key bytes (protobuf's bytes fields).
void Cleanse(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace

StatusOr<SecureBuffer> KbsKeyProvider::GetKey(const KeySource& source, size_t /*bytes*/) {
  if (source.ephemeral()) return absl::InternalError("KBS key provider asked for an ephemeral key");
  // Its size is the router's to check (KeyProviderRouter).
  return client_->GetResource(source.kbs_uri());
}

StatusOr<SecureBuffer> CdhKeyProvider::GetKey(const KeySource& source, size_t bytes) {
  if (source.ephemeral()) return absl::InternalError("CDH key provider asked for an ephemeral key");
  auto client = ttrpc::Client::ConnectUnix(socket_);
  if (!client.ok())
    return absl::UnavailableError(
        Cat("Confidential Data Hub at ", socket_, " is unreachable: ", client.status().message()));
  api::GetResourceRequest req;
  req.set_resourcepath(source.kbs_uri());
  auto reply = (*client)->Call("api.GetResourceService", "GetResource", req.SerializeAsString(), timeout_);
  if (!reply.ok()) {
    // CDH reports every failure (attestation, KBS, missing resource) as
    // INTERNAL with a message: keep its code and words, they name the cause.
    return Annotate(reply.status(), Cat("Confidential Data Hub GetResource(", source.kbs_uri(), ")"));
  }
  api::GetResourceResponse resp;
  const bool parsed = resp.ParseFromString(*reply);
  Cleanse(*reply);
  if (!parsed) return absl::InternalError("Confidential Data Hub: unparsable GetResource reply");
  std::string* resource = resp.mutable_resource();
  // Checked before the copy: a wrong resource never reaches locked memory.
  Status size_ok = CheckKeySize(source, resource->size(), bytes);
  if (!size_ok.ok()) {
    Cleanse(*resource);
    return size_ok;
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer key, SecureBuffer::Allocate(bytes));
  std::memcpy(key.data(), resource->data(), bytes);
  Cleanse(*resource);
  log::Info("cdh.resource_released", {{"uri", source.kbs_uri()}});
  return key;
}

}  // namespace cocostorage::agent
