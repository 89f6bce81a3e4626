// The kata-agent stand-in's decisions: which Storage goes to SecureMount,
// what the request holds, the volume id our agent derives, the sysfs walk.
#include "kata_agent.h"

#include <gtest/gtest.h>

#include <chrono>

#include "cocostorage/common/strings.h"
#include "kata_runtime.h"

namespace cocostorage::e2e {
namespace {

// The Storage the runtime stand-in builds from the plugin's descriptor for the
// example pod (see kata_runtime_test.cc).
KataStorage ExampleStorage() {
  KataStorage s;
  s.driver = "blk";
  s.source = "02/00";
  s.fs_type = "ext4";
  s.options = {"noatime"};
  s.mount_point = "/run/kata-containers/sandbox/storage/MDIvMDA=";
  s.driver_options = {"encryption_key=ephemeral", "create_filesystem", "fsGroup=1000",
                      "cocostorage.dev/integrity=hmac-sha256", "cocostorage.dev/volumeMode=filesystem"};
  return s;
}

TEST(KataAgent, EphemeralWithCreateFilesystemGoesToSecureMount) {
  EXPECT_TRUE(KataAgentRoute(ExampleStorage()).ok());
  KataStorage s = ExampleStorage();
  s.driver_options = {"create_filesystem", "encryption_key=ephemeral"};  // order does not matter
  EXPECT_TRUE(KataAgentRoute(s).ok());
}

TEST(KataAgent, AnythingElseIsPlaintextOrRefused) {
  for (std::vector<std::string> opts :
       std::vector<std::vector<std::string>>{{},
                                             {"create_filesystem"},
                                             {"encryption_key=kbs:///default/key/1", "create_filesystem"},
                                             {"encryption_key=Ephemeral", "create_filesystem"},
                                             {"encryption_key=ephemeral ", "create_filesystem"},
                                             {"encryption_key=", "create_filesystem"}}) {
    KataStorage s = ExampleStorage();
    s.driver_options = opts;
    Status st = KataAgentRoute(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << Join(opts, ",");
    EXPECT_NE(st.message().find("kata-agent would mount this in plaintext"), std::string::npos) << st;
  }
  KataStorage block = ExampleStorage();
  block.driver_options = {"encryption_key=ephemeral", "cocostorage.dev/volumeMode=block"};
  Status st = KataAgentRoute(block);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("requires create_filesystem"), std::string::npos) << st;
}

// A persistent (KBS-keyed) volume as cocostorage-csi now describes it: the
// runtime stand-in turns the descriptor into the ephemeral pair, so kata-agent
// takes the SecureMount path like upstream would (with encryption_key=kbs:///...
// it would have mounted the disk in plaintext), and the agent's own Storage
// adapter still sees the KBS key in the hints.
TEST(KataAgent, PersistentVolumeFromThePluginGoesToSecureMount) {
  constexpr char kPersistentJson[] = R"({"volume-type":"blk",
    "device":"/var/lib/cocostorage/volumes/cv-0123456789abcdef0123456789abcdef01234567.img",
    "fstype":"ext4",
    "metadata":{"encryptionKey":"ephemeral","createFilesystem":"true",
                "cocostorage.dev/kind":"persistent",
                "cocostorage.dev/kbsResourceUri":"kbs:///default/volume-keys/data-db-0",
                "cocostorage.dev/integrity":"hmac-sha256","cocostorage.dev/volumeMode":"filesystem",
                "cocostorage.dev/volumeId":"cv-0123456789abcdef0123456789abcdef01234567"},
    "options":[]})";
  auto info = ParseMountInfo(kPersistentJson);
  ASSERT_TRUE(info.ok()) << info.status();
  auto storage = BuildKataStorage(*info, "02/00");
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_TRUE(KataAgentRoute(*storage).ok()) << Join(storage->driver_options, ",");
  auto call = SecureMountCallFor(*storage, "252:16");
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->Options().count("cocostorage.dev/kbsResourceUri"), 0u);  // kata-agent forwards none of it
  auto request = agent::ActivationFromKataStorage(*storage, std::chrono::seconds(20));
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->key.has_value());
  EXPECT_EQ(request->key->kbs_uri(), "kbs:///default/volume-keys/data-db-0");
  // The older descriptor (encryptionKey: kbs:///...) is what kata-agent would
  // have mounted in plaintext.
  info->metadata["encryptionKey"] = "kbs:///default/volume-keys/data-db-0";
  storage = BuildKataStorage(*info, "02/00");
  ASSERT_TRUE(storage.ok()) << storage.status();
  Status st = KataAgentRoute(*storage);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("plaintext"), std::string::npos) << st;
}

TEST(KataAgent, CallCarriesKataAgentsFieldsOnly) {
  auto c = SecureMountCallFor(ExampleStorage(), "252:16");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->volume_type, "block-device");
  EXPECT_EQ(c->mount_point, "/run/kata-containers/sandbox/storage/MDIvMDA=");
  std::map<std::string, std::string> want = {{"deviceId", "252:16"},
                                             {"sourceType", "empty"},
                                             {"targetType", "fileSystem"},
                                             {"filesystemType", "ext4"},
                                             {"mkfsOpts", "-O ^has_journal -m 0 -i 163840 -I 128"},
                                             {"encryptionType", "luks2"},
                                             {"dataIntegrity", "true"}};
  EXPECT_EQ(c->Options(), want);
  EXPECT_EQ(c->GuestCommand(),
            "coco-kata-securemount -socket /run/confidential-containers/cdh.sock -device '252:16' -mount-point "
            "'/run/kata-containers/sandbox/storage/MDIvMDA=' -fs 'ext4' -mkfs '-O ^has_journal -m 0 -i 163840 -I "
            "128' -integrity true");
  for (const char* bad : {"", "252", "252:", ":16", "vda", "252:16:1", "-1:0", "252:16 "}) {
    EXPECT_FALSE(SecureMountCallFor(ExampleStorage(), bad).ok()) << bad;
  }
  KataStorage plain = ExampleStorage();
  plain.driver_options = {"create_filesystem"};
  EXPECT_EQ(SecureMountCallFor(plain, "252:16").status().code(), absl::StatusCode::kFailedPrecondition);
  KataStorage scsi = ExampleStorage();
  scsi.driver = "scsi";
  EXPECT_EQ(SecureMountCallFor(scsi, "8:0").status().code(), absl::StatusCode::kUnimplemented);
}

TEST(KataAgent, ShellQuotingSurvivesQuotes) {
  KataStorage s = ExampleStorage();
  s.mount_point = "/run/x/it's";
  auto c = SecureMountCallFor(s, "1:2");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->GuestCommand().find("'/run/x/it'\\''s'"), std::string::npos) << c->GuestCommand();
}

TEST(KataAgent, VolumeIdIsTheMountPointsLastComponentWithoutPadding) {
  EXPECT_EQ(SecureMountVolumeId("/run/kata-containers/sandbox/storage/MDIvMDA="), "sm-MDIvMDA");
  EXPECT_EQ(SecureMountVolumeId("/run/kata-containers/sandbox/storage/MDMvMDA="), "sm-MDMvMDA");
  EXPECT_EQ(SecureMountVolumeId("/run/kata-containers/image/"), "sm-image");
  EXPECT_EQ(SecureMountVolumeId("/run/kata-containers/sandbox/storage/MDI="), "sm-MDI");
}

TEST(KataAgent, SysfsWalkFollowsTheBridge) {
  auto s = PciPathToDevNumberScript("02/00", 50);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NE(s->find("p=$p/$bus:02.0;"), std::string::npos) << *s;
  EXPECT_NE(s->find("bus=$(ls $p/pci_bus"), std::string::npos) << *s;
  EXPECT_NE(s->find("p=$p/$bus:00.0;"), std::string::npos) << *s;
  EXPECT_NE(s->find("$p/virtio*/block/*/dev"), std::string::npos) << *s;
  EXPECT_NE(s->find("-lt 50 "), std::string::npos) << *s;
  auto one = PciPathToDevNumberScript("1f");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->find("pci_bus"), std::string::npos) << *one;  // no bridge to cross
  for (const char* bad : {"", "2/0", "0A/00", "02/00;reboot", "../x", "02//00", "02/00/00/00/00"}) {
    EXPECT_FALSE(PciPathToDevNumberScript(bad).ok()) << bad;
  }
}

TEST(KataAgent, ClientOutputKeepsTheAgentsCode) {
  EXPECT_TRUE(SecureMountOutputToStatus("ok\n", 0).ok());
  Status s = SecureMountOutputToStatus("error: 7 SecureMount: mkfs option -E is not allowed\n", 7);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("mkfs option -E is not allowed"), std::string::npos) << s;
  EXPECT_EQ(SecureMountOutputToStatus("error: 14 dial unix: no such file\n", 14).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SecureMountOutputToStatus("sh: coco-kata-securemount: not found\n", 127).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SecureMountOutputToStatus("ok\n", 1).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace cocostorage::e2e
