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
  p.create_filesystem = ShouldCreateFilesystem(v, p.mode);
  MountInfo m = BuildMountInfo(v, p);
  auto j = nlohmann::json::parse(MountInfoToJson(m));
  EXPECT_EQ(j["volume-type"], "blk");
  EXPECT_EQ(j["device"], "/var/lib/cocostorage/volumes/cv-1.img");
  EXPECT_EQ(j["fstype"], "ext4");
  EXPECT_EQ(j["options"], nlohmann::json::array({"noatime"}));
  nlohmann::json want = {{"encryptionKey", "ephemeral"},
                         {"createFilesystem", "true"},
                         {"fsGroup", "2000"},
                         {"cocostorage.dev/integrity", "hmac-sha256"},
                         {"cocostorage.dev/volumeMode", "filesystem"},
                         {"cocostorage.dev/volumeId", "cv-1"},
                         {"cocostorage.dev/mkfsOptions", "-m 0"}};
  EXPECT_EQ(j["metadata"], want);
  auto back = MountInfoFromJson(MountInfoToJson(m));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, m);
}

TEST(MountInfoTest, KbsFormatsOnlyOnFirstPublication) {
  VolumeRecord v = Volume(KeySource::kKbs);
  EXPECT_TRUE(ShouldCreateFilesystem(v, VolumeMode::kFilesystem));
  v.ever_published = true;
  EXPECT_FALSE(ShouldCreateFilesystem(v, VolumeMode::kFilesystem));
  PublishRecord p;
  p.readonly = true;
  MountInfo m = BuildMountInfo(v, p);
  EXPECT_EQ(m.metadata.at("encryptionKey"), "kbs:///default/key/vol1");
  EXPECT_EQ(m.metadata.at("createFilesystem"), "false");
  EXPECT_EQ(m.metadata.count("fsGroup"), 0u);
  EXPECT_EQ(m.metadata.count("cocostorage.dev/mkfsOptions"), 0u);
  EXPECT_EQ(m.options, std::vector<std::string>{"ro"});
  // Ephemeral keys always format.
  VolumeRecord e = Volume(KeySource::kEphemeral);
  e.ever_published = true;
  EXPECT_TRUE(ShouldCreateFilesystem(e, VolumeMode::kFilesystem));
}

TEST(MountInfoTest, BlockModeNeverFormats) {
  VolumeRecord v = Volume(KeySource::kEphemeral);
  PublishRecord p;
  p.mode = VolumeMode::kBlock;
  p.mount_flags = {"ignored"};
  p.create_filesystem = ShouldCreateFilesystem(v, p.mode);
  EXPECT_FALSE(p.create_filesystem);
  MountInfo m = BuildMountInfo(v, p);
  EXPECT_EQ(m.metadata.at("createFilesystem"), "false");
  EXPECT_EQ(m.metadata.at("cocostorage.dev/volumeMode"), "block");
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
