#include "params.h"

#include <gtest/gtest.h>

namespace cocostorage::csi {
namespace {

using Map = std::map<std::string, std::string>;

TEST(ParamsTest, DefaultsAreEphemeralWithIntegrity) {
  auto p = ParseVolumeParams({});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->key_source, KeySource::kEphemeral);
  EXPECT_EQ(p->integrity, "hmac-sha256");
  EXPECT_TRUE(p->kbs_resource_uri.empty());
  EXPECT_TRUE(p->fs_type.empty());
}

TEST(ParamsTest, KbsClassParses) {
  auto p = ParseVolumeParams({{"keySource", "kbs"},
                              {"kbsResourceUri", "kbs:///default/disk-key/pod-1.v2"},
                              {"fsType", "xfs"},
                              {"integrity", "aes-gcm"},
                              {"mkfsOptions", "  -m 0   -i 16384 "},
                              {"csi.storage.k8s.io/fstype", "ext4"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->key_source, KeySource::kKbs);
  EXPECT_EQ(p->kbs_resource_uri, "kbs:///default/disk-key/pod-1.v2");
  EXPECT_EQ(p->fs_type, "xfs");
  EXPECT_EQ(p->integrity, "aes-gcm");
  EXPECT_EQ(p->mkfs_options, "-m 0 -i 16384");
  auto again = ParseVolumeParams(p->ToMap());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *p);
}

TEST(ParamsTest, UnknownKeyIsNamed) {
  auto p = ParseVolumeParams({{"keysource", "ephemeral"}});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("\"keysource\""), std::string::npos);
  EXPECT_EQ(ParseVolumeParams({{"size", "1Gi"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseVolumeParams({{"size", "1Gi"}}, /*allow_size=*/true).ok());
}

TEST(ParamsTest, RejectsBadValues) {
  for (const Map& m : std::vector<Map>{
           {{"keySource", "tpm"}},
           {{"keySource", "kbs"}},                // URI missing
           {{"kbsResourceUri", "kbs:///a/b/c"}},  // URI without kbs
           {{"fsType", "btrfs"}},
           {{"fsType", ""}},
           {{"integrity", "crc32"}},
           {{"mkfsOptions", "-E foo;rm -rf /"}},
           {{"mkfsOptions", "$(reboot)"}},
       }) {
    EXPECT_EQ(ParseVolumeParams(m).status().code(), absl::StatusCode::kInvalidArgument) << m.begin()->first;
  }
}

TEST(ParamsTest, KbsUriGrammar) {
  for (const char* ok : {"kbs:///a/b/c", "kbs:///repo_1/key-type/tag.v1.2", "kbs:///-/_/x..y"}) {
    EXPECT_TRUE(ValidateKbsResourceUri(ok).ok()) << ok;
  }
  for (const char* bad :
       {"kbs://a/b/c", "kbs:///a/b", "kbs:///a/b/c/d", "kbs:///a//c", "kbs:///.a/b/c", "kbs:///a/b/c/",
        "kbs:///a/b/c?x=1", "https:///a/b/c", "kbs:///a/b/../c", "kbs:///a b/c/d", ""}) {
    EXPECT_EQ(ValidateKbsResourceUri(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParamsTest, Quantities) {
  EXPECT_EQ(*ParseQuantity("1073741824"), 1073741824);
  EXPECT_EQ(*ParseQuantity("512Mi"), 512LL << 20);
  EXPECT_EQ(*ParseQuantity("10Gi"), 10LL << 30);
  EXPECT_EQ(*ParseQuantity("10G"), 10000000000LL);
  EXPECT_EQ(*ParseQuantity("2Ti"), 2LL << 40);
  for (const char* bad : {"", "Gi", "-1", "1.5Gi", "1Xi", "99999999999999999999", "9999999999Ti"}) {
    EXPECT_FALSE(ParseQuantity(bad).ok()) << bad;
  }
}

TEST(ParamsTest, InlineSizeIsPositiveAndBounded) {
  EXPECT_EQ(*ParseInlineSize("64Mi"), 64LL << 20);
  EXPECT_EQ(*ParseInlineSize("1"), 1);
  EXPECT_EQ(*ParseInlineSize("1024Ti"), kMaxInlineBytes);
  for (const char* bad : {"0", "0Gi", "1025Ti", "9223372036854775807", "", "-1", "1x"}) {
    EXPECT_EQ(ParseInlineSize(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParamsTest, EchoCapsAndSanitisesInput) {
  EXPECT_EQ(Echo("cv-abc"), "cv-abc");
  EXPECT_EQ(Echo(std::string("a\nb\x01", 4)), "a?b?");
  const std::string huge(100000, 'x');
  EXPECT_EQ(Echo(huge), std::string(kEchoMax, 'x') + "...");
  // Messages built from hostile input stay bounded.
  const std::string id(5000, 'z');
  EXPECT_LE(ValidateVolumeId(id + "!").message().size(), kEchoMax + 64);
  EXPECT_LE(ParseVolumeParams({{huge, "v"}}).status().message().size(), kEchoMax + 64);
  EXPECT_LE(ValidateRequestPath("/a/" + huge + "/.", "target_path").message().size(), 2 * kEchoMax + 64);
  EXPECT_LE(ValidateRequestPath(huge, "target_path").message().size(), kEchoMax + 64);
  EXPECT_LE(ValidateFsGroup(huge).message().size(), kEchoMax + 96);
}

TEST(ParamsTest, ResolveCapacity) {
  constexpr int64_t kMi = 1 << 20;
  EXPECT_EQ(*ResolveCapacity(0, 0, 1024 * kMi, kMi), 1024 * kMi);  // default
  EXPECT_EQ(*ResolveCapacity(1, 0, 1024 * kMi, kMi), kMi);         // round up
  EXPECT_EQ(*ResolveCapacity(kMi + 1, 0, 0, kMi), 2 * kMi);
  EXPECT_EQ(*ResolveCapacity(0, 10 * kMi, 1024 * kMi, kMi), 10 * kMi);  // default capped by limit
  EXPECT_EQ(*ResolveCapacity(3 * kMi, 3 * kMi, 0, kMi), 3 * kMi);
  EXPECT_EQ(ResolveCapacity(-1, 0, 0, kMi).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveCapacity(0, -1, 0, kMi).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveCapacity(5 * kMi, 4 * kMi, 0, kMi).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ResolveCapacity(kMi + 1, kMi + 2, 0, kMi).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ResolveCapacity(INT64_MAX, 0, 0, kMi).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(CapacityFits(2 * kMi, kMi, 0));
  EXPECT_FALSE(CapacityFits(2 * kMi, 3 * kMi, 0));
  EXPECT_FALSE(CapacityFits(2 * kMi, kMi, kMi));
}

TEST(ParamsTest, VolumeIds) {
  EXPECT_EQ(ValidateVolumeId("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateVolumeId("cv-0123abcd").ok());
  EXPECT_TRUE(ValidateVolumeId("csi-5f3e2a").ok());
  for (const char* bad : {"../x", "a/b", ".hidden", "x y", "a\nb"}) {
    EXPECT_EQ(ValidateVolumeId(bad).code(), absl::StatusCode::kNotFound) << bad;
  }
  EXPECT_EQ(ValidateVolumeId(std::string(129, 'a')).code(), absl::StatusCode::kNotFound);
  std::string id = VolumeIdForName("pvc-1");
  EXPECT_EQ(id, VolumeIdForName("pvc-1"));
  EXPECT_NE(id, VolumeIdForName("pvc-2"));
  EXPECT_EQ(id.size(), 43u);
  EXPECT_TRUE(ValidateVolumeId(id).ok());
}

TEST(ParamsTest, RequestPaths) {
  EXPECT_TRUE(ValidateRequestPath("/var/lib/kubelet/pods/u/volumes/x/mount", "target_path").ok());
  for (const char* bad : {"", "relative/path", "/a/../b", "/a/./b", "/a//b", "/a/b/", "/", "/..", "/a/.."}) {
    EXPECT_EQ(ValidateRequestPath(bad, "target_path").code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateRequestPath(std::string("/a\0b", 4), "p").code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParamsTest, Base64UrlWithPadding) {
  EXPECT_EQ(Base64UrlEncode(""), "");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg==");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8=");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff\xbf"), "-_-_");  // URL alphabet, not "+/+/"
  // A kubelet target path, as `kata-runtime direct-volume` names it.
  EXPECT_EQ(Base64UrlEncode("/a/b"), "L2EvYg==");
  EXPECT_TRUE(KataVolumeDirName(std::string(189, 'a')).ok());
  EXPECT_EQ(KataVolumeDirName(std::string(190, 'a')).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParamsTest, FsGroupAndFlags) {
  EXPECT_TRUE(ValidateFsGroup("0").ok());
  EXPECT_TRUE(ValidateFsGroup("2147483647").ok());  // the largest gid the guest accepts
  for (const char* bad : {"", "-1", "2147483648", "4294967295", "4294967296", "12a", "root"}) {
    EXPECT_FALSE(ValidateFsGroup(bad).ok()) << bad;
  }
  EXPECT_TRUE(ValidateMountFlag("noatime").ok());
  EXPECT_TRUE(ValidateMountFlag("discard").ok());
  for (const char* bad : {"", "a b", "x\"y", "a\tb"}) EXPECT_FALSE(ValidateMountFlag(bad).ok()) << bad;
}

}  // namespace
}  // namespace cocostorage::csi
