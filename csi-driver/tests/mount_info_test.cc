#include "mount_info.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cocostorage/common/fs_util.h"
#include "params.h"
#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

using testing::TempDir;

VolumeRecord Volume(KeySource ks) {
  VolumeRecord r;
  r.id = "cv-1";
  r.capacity_bytes = 1 << 30;
  r.params.key_source = ks;
  if (ks == KeySource::kKbs) r.params.kbs_resource_uri = "kbs:///default/key/vol1";
  r.params.fs_type = "ext4";
  r.device = "/var/lib/cocostorage/volumes/cv-1.img";
  return r;
}

TEST(MountInfoTest, FilesystemMetadataContract) {
  VolumeRecord v = Volume(KeySource::kEphemeral);
  v.params.mkfs_options = "-m 0";
  PublishRecord p;
  p.fs_group = "2000";
  p.mount_flags = {"noatime"};
  p.create_filesystem = ShouldCreateFilesystem(p.mode);
  MountInfo m = BuildMountInfo(v, p);
  auto j = nlohmann::json::parse(MountInfoToJson(m));
  EXPECT_EQ(j["volume-type"], "blk");
  EXPECT_EQ(j["device"], "/var/lib/cocostorage/volumes/cv-1.img");
  EXPECT_EQ(j["fstype"], "ext4");
  EXPECT_EQ(j["options"], nlohmann::json::array({"noatime"}));
  nlohmann::json want = {{"encryptionKey", "ephemeral"},
                         {"createFilesystem", "true"},
                         {"fsGroup", "2000"},
                         {"cocostorage.dev/kind", "ephemeral"},
                         {"cocostorage.dev/integrity", "hmac-sha256"},
                         {"cocostorage.dev/volumeMode", "filesystem"},
                         {"cocostorage.dev/volumeId", "cv-1"},
                         {"cocostorage.dev/mkfsOptions", "-m 0"}};
  EXPECT_EQ(j["metadata"], want);
  auto back = MountInfoFromJson(MountInfoToJson(m));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, m);
}

// A persistent (KBS-keyed) volume looks like an ephemeral one to kata-agent
// (encryption_key=ephemeral + create_filesystem is the only pair it hands to
// the CDH slot; anything else it mounts in plaintext); what it is and which
// key it names travel as cocostorage.dev/ hints.
TEST(MountInfoTest, PersistentVolumeIsPresentedLikeAnEphemeralOne) {
  VolumeRecord v = Volume(KeySource::kKbs);
  PublishRecord p;
  p.fs_group = "2000";
  p.mount_flags = {"noatime"};
  p.create_filesystem = ShouldCreateFilesystem(p.mode);
  MountInfo m = BuildMountInfo(v, p);
  std::map<std::string, std::string> want = {{"encryptionKey", "ephemeral"},
                                             {"createFilesystem", "true"},
                                             {"fsGroup", "2000"},
                                             {"cocostorage.dev/kind", "persistent"},
                                             {"cocostorage.dev/kbsResourceUri", "kbs:///default/key/vol1"},
                                             {"cocostorage.dev/integrity", "hmac-sha256"},
                                             {"cocostorage.dev/volumeMode", "filesystem"},
                                             {"cocostorage.dev/volumeId", "cv-1"}};
  EXPECT_EQ(m.metadata, want);
  EXPECT_EQ(m.options, std::vector<std::string>{"noatime"});
  // Read-only: the same keys, "ro" among the options.
  p = PublishRecord{};
  p.readonly = true;
  p.create_filesystem = ShouldCreateFilesystem(p.mode);
  m = BuildMountInfo(v, p);
  EXPECT_EQ(m.metadata.at("encryptionKey"), "ephemeral");
  EXPECT_EQ(m.metadata.at("createFilesystem"), "true");
  EXPECT_EQ(m.metadata.count("fsGroup"), 0u);
  EXPECT_EQ(m.metadata.count("cocostorage.dev/mkfsOptions"), 0u);
  EXPECT_EQ(m.options, std::vector<std::string>{"ro"});
}

// createFilesystem depends on the mode alone: every filesystem publication of
// any volume, first or not (the guest creates a file system only on a device
// without a header of ours), never block mode.
TEST(MountInfoTest, CreateFilesystemFollowsTheModeOnly) {
  EXPECT_TRUE(ShouldCreateFilesystem(VolumeMode::kFilesystem));
  EXPECT_FALSE(ShouldCreateFilesystem(VolumeMode::kBlock));
}

TEST(MountInfoTest, EncryptionKeyNeverNamesAKbsResource) {
  for (KeySource ks : {KeySource::kEphemeral, KeySource::kKbs}) {
    for (VolumeMode mode : {VolumeMode::kFilesystem, VolumeMode::kBlock}) {
      VolumeRecord v = Volume(ks);
      v.params.kbs_resource_uri = ks == KeySource::kKbs ? "kbs:///team-a/volume-keys/data-db-0" : "";
      PublishRecord p;
      p.mode = mode;
      p.create_filesystem = ShouldCreateFilesystem(mode);
      MountInfo m = BuildMountInfo(v, p);
      EXPECT_EQ(m.metadata.at("encryptionKey"), "ephemeral");
      EXPECT_EQ(m.metadata.at("createFilesystem"), mode == VolumeMode::kBlock ? "false" : "true");
      EXPECT_EQ(m.metadata.at("cocostorage.dev/kind"), ks == KeySource::kKbs ? "persistent" : "ephemeral");
      EXPECT_EQ(m.metadata.count("cocostorage.dev/kbsResourceUri"), ks == KeySource::kKbs ? 1u : 0u);
      for (const auto& [key, value] : m.metadata) {
        if (key == "cocostorage.dev/kbsResourceUri") continue;  // the hint, the one place for the URI
        EXPECT_NE(value.rfind("kbs:", 0), 0u) << key << "=" << value;
      }
      // What the JSON file holds, not only the map.
      auto j = nlohmann::json::parse(MountInfoToJson(m));
      EXPECT_EQ(j["metadata"]["encryptionKey"], "ephemeral");
    }
  }
}

TEST(MountInfoTest, BlockModeNeverFormats) {
  VolumeRecord v = Volume(KeySource::kEphemeral);
  PublishRecord p;
  p.mode = VolumeMode::kBlock;
  p.mount_flags = {"ignored"};
  p.create_filesystem = ShouldCreateFilesystem(p.mode);
  EXPECT_FALSE(p.create_filesystem);
  MountInfo m = BuildMountInfo(v, p);
  EXPECT_EQ(m.metadata.at("createFilesystem"), "false");
  EXPECT_EQ(m.metadata.at("cocostorage.dev/volumeMode"), "block");
  EXPECT_EQ(m.metadata.at("encryptionKey"), "ephemeral");
  EXPECT_TRUE(m.options.empty());
}

TEST(MountInfoTest, WriterLayoutPermissionsAndRemoval) {
  TempDir tmp;
  std::string root = tmp.path() + "/kata";
  MountInfoWriter w(root);
  const std::string target = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1/mount";
  MountInfo m = BuildMountInfo(Volume(KeySource::kEphemeral), PublishRecord{});
  ASSERT_TRUE(w.Write(target, m).ok());
  std::string dir = root + "/" + Base64UrlEncode(target);
  EXPECT_EQ(*w.DirFor(target), dir);
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat((dir + "/mountInfo.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto read = w.Read(target);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ(**read, m);
  ASSERT_TRUE(w.Write(target, m).ok());  // rewrite is fine
  // The runtime drops a sandbox-id marker beside the descriptor.
  ASSERT_TRUE(AtomicWriteFile(dir + "/sandbox-1234", "").ok());
  ASSERT_TRUE(w.Remove(target).ok());
  EXPECT_NE(access(dir.c_str(), F_OK), 0);
  ASSERT_TRUE(w.Remove(target).ok());  // idempotent
  EXPECT_FALSE(w.Read(target)->has_value());
}

}  // namespace
}  // namespace cocostorage::csi
