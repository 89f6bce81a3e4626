// What kata-agent's block_handler.rs sends the CDH for an ephemeral blk
// storage at PCI path 02/00: the request the SecureMount and policy tests
// start from (test-only).
#pragma once

#include "cdh/api.pb.h"

namespace cocostorage::agent::testing {

inline api::SecureMountRequest KataAgentRequest() {
  api::SecureMountRequest r;
  r.set_volume_type("block-device");
  r.set_mount_point("/run/kata-containers/sandbox/storage/MDIvMDA=");
  auto& o = *r.mutable_options();
  o["deviceId"] = "254:16";
  o["sourceType"] = "empty";
  o["targetType"] = "fileSystem";
  o["filesystemType"] = "ext4";
  o["mkfsOpts"] = "-O ^has_journal -m 0 -i 163840 -I 128";
  o["encryptionType"] = "luks2";
  o["dataIntegrity"] = "true";
  return r;
}

}  // namespace cocostorage::agent::testing
