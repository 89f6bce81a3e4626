#include "policy/storage_policy.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "core/text.h"

namespace cocostorage::agent::policy {
namespace {

constexpr uint64_t kGi = uint64_t{1} << 30;

// the research draft of the policy design (now docs/design.md), verbatim.
constexpr char kDraftExample[] = R"(schema = "cocostorage.dev/storage-policy"
schema_version = 1
policy_version = 3
workload = "team-a/postgres-0"

[limits]
max_ephemeral_volumes = 1

[secure_mount]
blank_device = "deny"        # one ephemeral + one create-able persistent: a blank disk is ambiguous

[[volume]]
id = "scratch"
kind = "ephemeral"
key = "ephemeral"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = ["-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128", "-E", "lazy_journal_init"]
mount_options = ["noatime"]
min_size = "1Gi"
max_size = "16Gi"
routes = ["secure-mount"]
container_path = "/scratch"

[[volume]]
id = "pgdata"
kind = "persistent"
key = "kbs:///team-a/volume-keys/pgdata"
create = "if-blank"          # switch to "never" once provisioned (policy_version 4)
blank_check = "structural"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = ["-m", "0"]
mount_options = ["noatime"]
min_size = "8Gi"
max_size = "64Gi"
routes = ["secure-mount", "kata-storage"]
container_path = "/var/lib/postgresql/data"
)";

StoragePolicy DraftExampleStruct() {
  StoragePolicy p;
  p.schema_version = 1;
  p.policy_version = 3;
  p.workload = "team-a/postgres-0";
  p.max_ephemeral_volumes = 1;
  p.secure_mount_blank_device = {BlankDeviceRule::Kind::kDeny, ""};
  VolumeRule scratch;
  scratch.id = "scratch";
  scratch.kind = VolumeKind::kEphemeral;
  scratch.key = KeySource::Ephemeral();
  scratch.integrity = {IntegrityMode::kHmacSha256};
  scratch.fs_type = "ext4";
  scratch.mkfs_options = {"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128", "-E", "lazy_journal_init"};
  scratch.mount_options = {"noatime"};
  scratch.min_size_bytes = 1 * kGi;
  scratch.max_size_bytes = 16 * kGi;
  scratch.routes = {Origin::kSecureMount};
  scratch.container_path = "/scratch";
  VolumeRule pgdata;
  pgdata.id = "pgdata";
  pgdata.kind = VolumeKind::kPersistent;
  pgdata.key = *KeySource::Kbs("kbs:///team-a/volume-keys/pgdata");
  pgdata.create = CreateRule::kIfBlank;
  pgdata.blank_check = BlankCheck::kStructural;
  pgdata.integrity = {IntegrityMode::kHmacSha256};
  pgdata.fs_type = "ext4";
  pgdata.mkfs_options = {"-m", "0"};
  pgdata.mount_options = {"noatime"};
  pgdata.min_size_bytes = 8 * kGi;
  pgdata.max_size_bytes = 64 * kGi;
  pgdata.routes = {Origin::kSecureMount, Origin::kKataStorage};
  pgdata.container_path = "/var/lib/postgresql/data";
  p.volumes = {scratch, pgdata};
  return p;
}

// Minimal valid pieces the rejection tests edit one key at a time.
constexpr char kHead[] = R"(schema = "cocostorage.dev/storage-policy"
schema_version = 1
policy_version = 1
)";
constexpr char kEphemeral[] = R"(
[[volume]]
id = "scratch"
kind = "ephemeral"
key = "ephemeral"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
max_size = "1Gi"
routes = ["secure-mount"]
)";
constexpr char kPersistent[] = R"(
[[volume]]
id = "pgdata"
kind = "persistent"
key = "kbs:///team-a/volume-keys/pgdata"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
max_size = "64Gi"
routes = ["secure-mount"]
)";

// Sets `key = value` in one piece: replaces the key's line, appends it when
// absent (the piece's table is its last), removes it when `value` is empty.
std::string Set(std::string_view piece, std::string_view key, std::string_view value) {
  std::string text = Cat("\n", piece);  // every line, the first too, follows a newline
  const size_t at = text.find(Cat("\n", key, " = "));
  const std::string line = value.empty() ? "" : Cat(key, " = ", value, "\n");
  if (at == std::string::npos) return Cat(piece, line);
  text.replace(at + 1, text.find('\n', at + 1) - at, line);
  return text.substr(1);
}

std::string Ephemeral(std::string_view key, std::string_view value) { return Set(kEphemeral, key, value); }
std::string Persistent(std::string_view key, std::string_view value) { return Set(kPersistent, key, value); }

std::string RejectionMessage(const std::string& doc) {
  auto p = ParseStoragePolicy(doc);
  if (p.ok()) return "(parsed)";
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  return std::string(p.status().message());
}

void ExpectRejected(const std::string& doc, std::string_view message_start) {
  const std::string message = RejectionMessage(doc);
  EXPECT_EQ(message.substr(0, message_start.size()), message_start) << "message: " << message << "\ndoc:\n"
                                                                    << doc.substr(0, 2000);
}

TEST(StoragePolicyTest, DraftExampleParsesToTheExpectedStruct) {
  auto p = ParseStoragePolicy(kDraftExample);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, DraftExampleStruct());
  ASSERT_NE(p->Find("pgdata"), nullptr);
  EXPECT_EQ(p->Find("pgdata")->kind, VolumeKind::kPersistent);
  EXPECT_EQ(p->Find("nope"), nullptr);
}

TEST(StoragePolicyTest, MinimalPiecesParse) {
  auto p = ParseStoragePolicy(Cat(kHead, kEphemeral, kPersistent));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->volumes.size(), 2u);
  EXPECT_TRUE(ParseStoragePolicy(kHead).ok());  // no volume: serves nothing, but valid
}

TEST(StoragePolicyTest, Defaults) {
  auto p = ParseStoragePolicy(Cat(kHead, kEphemeral, kPersistent, Set(kEphemeral, "id", "\"tmp\"")));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->workload, "");
  EXPECT_EQ(p->max_ephemeral_volumes, 2u);  // absent: one per ephemeral rule
  EXPECT_EQ(p->secure_mount_blank_device.kind, BlankDeviceRule::Kind::kDeny);
  const VolumeRule& pg = *p->Find("pgdata");
  EXPECT_EQ(pg.create, CreateRule::kNever);
  EXPECT_EQ(pg.blank_check, BlankCheck::kStructural);
  EXPECT_FALSE(pg.read_only);
  EXPECT_EQ(pg.min_size_bytes, 0u);
  EXPECT_TRUE(pg.mkfs_options.empty());
  EXPECT_TRUE(pg.mount_options.empty());
  EXPECT_EQ(pg.container_path, "");

  auto explicit_zero = ParseStoragePolicy(Cat(kHead, "[limits]\nmax_ephemeral_volumes = 0\n", kEphemeral));
  ASSERT_TRUE(explicit_zero.ok()) << explicit_zero.status();
  EXPECT_EQ(explicit_zero->max_ephemeral_volumes, 0u);
  auto empty_limits = ParseStoragePolicy(Cat(kHead, "[limits]\n", kEphemeral));
  ASSERT_TRUE(empty_limits.ok()) << empty_limits.status();
  EXPECT_EQ(empty_limits->max_ephemeral_volumes, 1u);
}

TEST(StoragePolicyTest, BlankDeviceChoices) {
  auto eph = ParseStoragePolicy(Cat(kHead, "[secure_mount]\nblank_device = \"ephemeral\"\n", kEphemeral));
  ASSERT_TRUE(eph.ok()) << eph.status();
  EXPECT_EQ(eph->secure_mount_blank_device.kind, BlankDeviceRule::Kind::kEphemeral);
  auto vol = ParseStoragePolicy(Cat(kHead, "[secure_mount]\nblank_device = \"pgdata\"\n", kEphemeral, kPersistent));
  ASSERT_TRUE(vol.ok()) << vol.status();
  EXPECT_EQ(vol->secure_mount_blank_device, (BlankDeviceRule{BlankDeviceRule::Kind::kVolume, "pgdata"}));
}

TEST(StoragePolicyTest, BlockVolumeAndIntegerSizes) {
  std::string block = Set(Set(Set(kPersistent, "mode", "\"block\""), "fs_type", ""), "min_size", "4096");
  block = Set(Set(block, "max_size", "1073741824"), "read_only", "true");
  auto p = ParseStoragePolicy(Cat(kHead, block));
  ASSERT_TRUE(p.ok()) << p.status();
  const VolumeRule& v = p->volumes.at(0);
  EXPECT_TRUE(v.block_mode);
  EXPECT_TRUE(v.read_only);
  EXPECT_EQ(v.fs_type, "");
  EXPECT_EQ(v.min_size_bytes, 4096u);
  EXPECT_EQ(v.max_size_bytes, kGi);
}

TEST(StoragePolicyTest, EphemeralMayAllowSeveralIntegrityModesFirstIsDefault) {
  auto p = ParseStoragePolicy(Cat(kHead, Ephemeral("integrity", R"(["aegis128", "none", "aes-gcm"])")));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->volumes[0].integrity,
            (std::vector<IntegrityMode>{IntegrityMode::kAegis128, IntegrityMode::kNone, IntegrityMode::kAesGcm}));
}

TEST(StoragePolicyRejectTest, TheIntegrityMessageNamesTheKeyPath) {
  EXPECT_EQ(RejectionMessage(Cat(kHead, Persistent("integrity", "[\"md5\"]"))),
            "volume[pgdata].integrity: \"md5\" is not one of hmac-sha256, aegis128, aes-gcm, none");
}

TEST(StoragePolicyRejectTest, NotToml) {
  ExpectRejected("schema = ", "storage policy is not TOML: ");
  ExpectRejected(Cat(kHead, "policy_version = 2\n"), "storage policy is not TOML: ");  // TOML's own duplicate key
}

TEST(StoragePolicyRejectTest, UnknownKeysAtEveryLevel) {
  ExpectRejected(Cat(kHead, "colour = 1\n"), "\"colour\": unknown key");
  ExpectRejected(Cat(kHead, "[limits]\nmax_volumes = 1\n"), "limits.\"max_volumes\": unknown key");
  ExpectRejected(Cat(kHead, "[secure_mount]\nblank = \"deny\"\n"), "secure_mount.\"blank\": unknown key");
  ExpectRejected(Cat(kHead, Ephemeral("size", "\"1Gi\"")), "volume[scratch].\"size\": unknown key");
  ExpectRejected(Cat(kHead, Ephemeral("extra", "{ a = 1 }")), "volume[scratch].\"extra\": unknown key");
  ExpectRejected(Cat(kHead, "[other]\n"), "\"other\": unknown key");
}

TEST(StoragePolicyRejectTest, WrongTypes) {
  ExpectRejected(Set(kHead, "policy_version", "\"3\""), "policy_version: expected an integer, got a string");
  ExpectRejected(Set(kHead, "schema", "1"), "schema: expected a string, got an integer");
  ExpectRejected(Cat(kHead, "workload = [\"a\"]\n"), "workload: expected a string, got an array");
  ExpectRejected(Cat(kHead, "limits = 3\n"), "limits: expected a table, got an integer");
  ExpectRejected(Cat(kHead, "[limits]\nmax_ephemeral_volumes = true\n"),
                 "limits.max_ephemeral_volumes: expected an integer, got a boolean");
  ExpectRejected(Cat(kHead, "secure_mount = \"deny\"\n"), "secure_mount: expected a table, got a string");
  ExpectRejected(Cat(kHead, "[secure_mount]\nblank_device = 0\n"), "secure_mount.blank_device: expected a string");
  ExpectRejected(Cat(kHead, "[volume]\nid = \"x\"\n"), "volume: expected an array of tables");
  ExpectRejected(Cat(kHead, "volume = [1]\n"), "volume[0]: expected a table, got an integer");
  ExpectRejected(Cat(kHead, Ephemeral("read_only", "\"yes\"")),
                 "volume[scratch].read_only: expected a boolean, got a string");
  ExpectRejected(Cat(kHead, Ephemeral("integrity", "\"hmac-sha256\"")),
                 "volume[scratch].integrity: expected an array of strings, got a string");
  ExpectRejected(Cat(kHead, Ephemeral("routes", "[\"secure-mount\", 1]")),
                 "volume[scratch].routes[1]: expected a string, got an integer");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "1.5")), "volume[scratch].max_size: expected a size");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "2024-01-01")), "volume[scratch].max_size: expected a size");
  ExpectRejected(Cat(kHead, Ephemeral("id", "7")), "volume[0].id: expected a string, got an integer");
  ExpectRejected(Cat(kHead, Ephemeral("mkfs_options", "[[\"-m\"]]")),
                 "volume[scratch].mkfs_options[0]: expected a string, got an array");
}

TEST(StoragePolicyRejectTest, SchemaAndVersions) {
  ExpectRejected(Set(kHead, "schema", ""), "schema: required");
  ExpectRejected(Set(kHead, "schema", "\"cocostorage.dev/storage-policy/v1\""),
                 "schema: \"cocostorage.dev/storage-policy/v1\" is not \"cocostorage.dev/storage-policy\"");
  ExpectRejected(Set(kHead, "schema_version", ""), "schema_version: required");
  ExpectRejected(Set(kHead, "schema_version", "2"), "schema_version: 2 is not a version this agent knows (1)");
  ExpectRejected(Set(kHead, "schema_version", "0"), "schema_version: 0 is not a version");
  ExpectRejected(Set(kHead, "policy_version", ""), "policy_version: required");
  ExpectRejected(Set(kHead, "policy_version", "0"), "policy_version: 0 is out of range [1, 4294967295]");
  ExpectRejected(Set(kHead, "policy_version", "-1"), "policy_version: -1 is out of range");
  ExpectRejected(Set(kHead, "policy_version", "4294967296"), "policy_version: 4294967296 is out of range");
  EXPECT_EQ(ParseStoragePolicy(Set(kHead, "policy_version", "4294967295"))->policy_version, 4294967295u);
  ExpectRejected(Cat(kHead, "[limits]\nmax_ephemeral_volumes = -1\n"), "limits.max_ephemeral_volumes: -1 is out");
}

TEST(StoragePolicyRejectTest, Bounds) {
  const std::string huge = Cat(kHead, "# ", std::string(kMaxPolicyBytes, 'x'), "\n");
  ExpectRejected(huge, Cat("storage policy is ", huge.size(), " bytes; at most 65536"));
  std::string many = kHead;
  for (size_t i = 0; i <= kMaxVolumes; ++i) many += Ephemeral("id", Cat("\"v", i, "\""));
  ASSERT_LE(many.size(), kMaxPolicyBytes);
  ExpectRejected(many, "volume: 65 volumes; at most 64");
  ExpectRejected(Cat(kHead, "workload = \"", std::string(kMaxStringBytes + 1, 'w'), "\"\n"),
                 "workload: 257 bytes; at most 256");
  EXPECT_TRUE(ParseStoragePolicy(Cat(kHead, "workload = \"", std::string(kMaxStringBytes, 'w'), "\"\n")).ok());
  ExpectRejected(Cat(kHead, Ephemeral("container_path", Cat("\"/", std::string(kMaxStringBytes, 'p'), "\""))),
                 "volume[scratch].container_path: 257 bytes");
  ExpectRejected(Cat(kHead, Ephemeral("mkfs_options", Cat("[\"", std::string(kMaxStringBytes + 1, 'o'), "\"]"))),
                 "volume[scratch].mkfs_options[0]: 257 bytes");
  std::vector<std::string> words;
  for (size_t i = 0; i <= kMaxListItems; ++i) words.push_back(Cat("\"opt", i, "\""));
  ExpectRejected(Cat(kHead, Ephemeral("mount_options", Cat("[", Join(words, ", "), "]"))),
                 "volume[scratch].mount_options: 33 items; at most 32");
}

TEST(StoragePolicyRejectTest, Ids) {
  ExpectRejected(Cat(kHead, Ephemeral("id", "")), "volume[0].id: required");
  ExpectRejected(Cat(kHead, kEphemeral, Persistent("id", "\"-bad\"")), "volume[1].id: volume_id \"-bad\"");
  ExpectRejected(Cat(kHead, Ephemeral("id", Cat("\"", std::string(65, 'a'), "\""))), "volume[0].id: volume_id");
  ExpectRejected(Cat(kHead, kEphemeral, Persistent("id", "\"scratch\"")),
                 "volume[1].id: \"scratch\" is declared twice");
}

TEST(StoragePolicyRejectTest, KindAndKey) {
  ExpectRejected(Cat(kHead, Ephemeral("kind", "")), "volume[scratch].kind: required");
  ExpectRejected(Cat(kHead, Ephemeral("kind", "\"temporary\"")),
                 "volume[scratch].kind: \"temporary\" is not one of ephemeral, persistent");
  ExpectRejected(Cat(kHead, Ephemeral("key", "")), "volume[scratch].key: required");
  ExpectRejected(Cat(kHead, Ephemeral("key", "\"kbs:///a/b/c\"")), "volume[scratch].key: an ephemeral volume");
  ExpectRejected(Cat(kHead, Persistent("key", "\"ephemeral\"")), "volume[pgdata].key: a persistent volume needs");
  ExpectRejected(Cat(kHead, Persistent("key", "\"kbs:///a/b\"")), "volume[pgdata].key: KBS resource URI");
  ExpectRejected(Cat(kHead, Persistent("key", "\"https://kbs/a/b/c\"")), "volume[pgdata].key: KBS resource URI");
}

TEST(StoragePolicyRejectTest, PersistentOnlyKeys) {
  ExpectRejected(Cat(kHead, Ephemeral("create", "\"never\"")),
                 "volume[scratch].create: only persistent volumes take this key");
  ExpectRejected(Cat(kHead, Ephemeral("blank_check", "\"full\"")),
                 "volume[scratch].blank_check: only persistent volumes take this key");
  ExpectRejected(Cat(kHead, Persistent("create", "\"always\"")),
                 "volume[pgdata].create: \"always\" is not one of never, if-blank");
  ExpectRejected(Cat(kHead, Persistent("blank_check", "\"none\"")),
                 "volume[pgdata].blank_check: \"none\" is not one of structural, full");
}

TEST(StoragePolicyRejectTest, Integrity) {
  ExpectRejected(Cat(kHead, Persistent("integrity", "[\"hmac-sha256\", \"none\"]")),
                 "volume[pgdata].integrity: a persistent volume takes exactly one mode, not 2");
  ExpectRejected(Cat(kHead, Ephemeral("integrity", "[]")), "volume[scratch].integrity: empty");
  ExpectRejected(Cat(kHead, Ephemeral("integrity", "")), "volume[scratch].integrity: required");
  ExpectRejected(Cat(kHead, Ephemeral("integrity", "[\"none\", \"none\"]")),
                 "volume[scratch].integrity: \"none\" is listed twice");
}

TEST(StoragePolicyRejectTest, ModeAndFilesystem) {
  ExpectRejected(Cat(kHead, Ephemeral("mode", "")), "volume[scratch].mode: required");
  ExpectRejected(Cat(kHead, Ephemeral("mode", "\"raw\"")),
                 "volume[scratch].mode: \"raw\" is not one of filesystem, block");
  const std::string block = Ephemeral("mode", "\"block\"");
  ExpectRejected(Cat(kHead, block), "volume[scratch].fs_type: block volumes take no filesystem settings");
  const std::string bare_block = Set(block, "fs_type", "");
  ASSERT_TRUE(ParseStoragePolicy(Cat(kHead, bare_block)).ok());
  ExpectRejected(Cat(kHead, Set(bare_block, "mkfs_options", "[]")),
                 "volume[scratch].mkfs_options: block volumes take no filesystem settings");
  ExpectRejected(Cat(kHead, Set(bare_block, "mount_options", "[\"noatime\"]")),
                 "volume[scratch].mount_options: block volumes take no filesystem settings");
  ExpectRejected(Cat(kHead, Ephemeral("fs_type", "")), "volume[scratch].fs_type: required");
  ExpectRejected(Cat(kHead, Ephemeral("fs_type", "\"btrfs\"")),
                 "volume[scratch].fs_type: \"btrfs\" is not one of ext4, xfs");
  ExpectRejected(Cat(kHead, Ephemeral("mkfs_options", "[\"-m\", \"\"]")), "volume[scratch].mkfs_options[1]: \"\"");
  ExpectRejected(Cat(kHead, Ephemeral("mount_options", "[\"noatime\\n\"]")),
                 "volume[scratch].mount_options[0]: \"noatime?\" is not a printable");
  ExpectRejected(Cat(kHead, Ephemeral("mount_options", "[\"noatime\", \"noatime\"]")),
                 "volume[scratch].mount_options: \"noatime\" is listed twice");
}

TEST(StoragePolicyRejectTest, Sizes) {
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "")), "volume[scratch].max_size: required");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "0")), "volume[scratch].max_size: must be greater than 0");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "\"0Gi\"")), "volume[scratch].max_size: must be greater than 0");
  ExpectRejected(Cat(kHead, Ephemeral("min_size", "\"2Gi\"")),
                 "volume[scratch].min_size: 2Gi is larger than max_size 1Gi");
  ExpectRejected(Cat(kHead, Ephemeral("min_size", "-1")), "volume[scratch].min_size: -1 is negative");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "\"16GB\"")), "volume[scratch].max_size: \"16GB\" is not a size");
  ExpectRejected(Cat(kHead, Ephemeral("max_size", "\"16777216Ti\"")),
                 "volume[scratch].max_size: \"16777216Ti\" does not fit 64 bits");
  EXPECT_TRUE(ParseStoragePolicy(Cat(kHead, Ephemeral("min_size", "\"1Gi\""))).ok());  // min == max
}

TEST(StoragePolicyRejectTest, Routes) {
  ExpectRejected(Cat(kHead, Ephemeral("routes", "")), "volume[scratch].routes: required");
  ExpectRejected(Cat(kHead, Ephemeral("routes", "[]")),
                 "volume[scratch].routes: empty; name at least one of secure-mount, kata-storage, agent-api");
  ExpectRejected(Cat(kHead, Ephemeral("routes", "[\"ssh\"]")),
                 "volume[scratch].routes: \"ssh\" is not one of secure-mount, kata-storage, agent-api");
  ExpectRejected(Cat(kHead, Ephemeral("routes", "[\"agent-api\", \"agent-api\"]")),
                 "volume[scratch].routes: \"agent-api\" is listed twice");
}

TEST(StoragePolicyRejectTest, BlankDevice) {
  ExpectRejected(Cat(kHead, "[secure_mount]\nblank_device = \"nope\"\n", kEphemeral),
                 "secure_mount.blank_device: \"nope\" is not \"deny\", \"ephemeral\" or a declared volume");
  ExpectRejected(Cat(kHead, "[secure_mount]\nblank_device = \"scratch\"\n", kEphemeral),
                 "secure_mount.blank_device: \"scratch\" is not a persistent volume");
}

TEST(StoragePolicyRejectTest, ContainerPath) {
  for (const char* bad : {"data", "", "/a/../b", "/a/", "/a//b", "/a/./b", "/a/\\u0001"}) {
    ExpectRejected(Cat(kHead, Ephemeral("container_path", Cat("\"", bad, "\""))), "volume[scratch].container_path: \"");
  }
  EXPECT_TRUE(ParseStoragePolicy(Cat(kHead, Ephemeral("container_path", "\"/var/lib/x\""))).ok());
}

TEST(StoragePolicySizeTest, Parse) {
  const std::pair<const char*, uint64_t> good[] = {
      {"0", 0},
      {"1", 1},
      {"4096", 4096},
      {"1Ki", 1024},
      {"3Mi", 3 << 20},
      {"16Gi", 16 * kGi},
      {"2Ti", uint64_t{2} << 40},
      {"0Ti", 0},
      {"16777215Ti", uint64_t{16777215} << 40},
      {"18446744073709551615", std::numeric_limits<uint64_t>::max()},
      {"00000000000000000001", 1},
  };
  for (const auto& [text, want] : good) {
    auto got = ParseSize(text);
    ASSERT_TRUE(got.ok()) << text << ": " << got.status();
    EXPECT_EQ(*got, want) << text;
  }
  for (const char* bad : {"", "Gi", "1G", "1GiB", "1gi", "-1", "+1", " 1", "1 ", "1.5Gi", "0x10", "1e3", "1KiKi",
                          "000000000000000000001"}) {
    auto got = ParseSize(bad);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << Quoted(bad);
    EXPECT_NE(got.status().message().find("is not a size"), absl::string_view::npos) << got.status();
  }
}

TEST(StoragePolicySizeTest, OverflowIsRefused) {
  for (const char* big : {"18446744073709551616", "99999999999999999999", "16777216Ti", "17179869184Gi",
                          "17592186044416Mi", "18014398509481984Ki", "99999999999999999999Ti"}) {
    auto got = ParseSize(big);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << big;
    EXPECT_NE(got.status().message().find("does not fit 64 bits"), absl::string_view::npos) << got.status();
  }
  EXPECT_EQ(*ParseSize("17179869183Gi"), uint64_t{17179869183} << 30);
}

TEST(StoragePolicySizeTest, FormatUsesTheLargestExactSuffix) {
  EXPECT_EQ(FormatSize(0), "0");
  EXPECT_EQ(FormatSize(1), "1");
  EXPECT_EQ(FormatSize(1023), "1023");
  EXPECT_EQ(FormatSize(1024), "1Ki");
  EXPECT_EQ(FormatSize(1536), "1536");
  EXPECT_EQ(FormatSize(1536 << 10), "1536Ki");
  EXPECT_EQ(FormatSize(3 * kGi), "3Gi");
  EXPECT_EQ(FormatSize(uint64_t{1} << 40), "1Ti");
  EXPECT_EQ(FormatSize(uint64_t{1} << 50), "1024Ti");
  EXPECT_EQ(FormatSize(std::numeric_limits<uint64_t>::max()), "18446744073709551615");
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 10, uint64_t{5} << 30, uint64_t{1} << 63,
                     std::numeric_limits<uint64_t>::max(), uint64_t{12345} << 20}) {
    EXPECT_EQ(*ParseSize(FormatSize(v)), v) << v;
  }
}

void ExpectRoundTrip(const StoragePolicy& p) {
  const std::string text = SerializeStoragePolicy(p);
  auto back = ParseStoragePolicy(text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(*back, p) << text;
  EXPECT_EQ(SerializeStoragePolicy(*back), text);
}

TEST(StoragePolicyRoundTripTest, DraftExample) { ExpectRoundTrip(DraftExampleStruct()); }

TEST(StoragePolicyRoundTripTest, StringsThatNeedEscaping) {
  StoragePolicy p = *ParseStoragePolicy(Cat(kHead, kEphemeral));
  p.workload = "team \"a\"\\b\tc\n\x01\x7f caf\xc3\xa9 \xe2\x9c\x93";
  p.volumes[0].container_path = "/data/caf\xc3\xa9 \"x\"";
  p.volumes[0].mkfs_options = {"-L", "a\\b\"c'd"};
  ExpectRoundTrip(p);
}

// Policies built from random choices within the schema's invariants: what the
// parser accepts, serialization keeps.
TEST(StoragePolicyRoundTripTest, RandomPolicies) {
  std::mt19937_64 rng(20240611);
  auto pick = [&](uint64_t n) { return static_cast<size_t>(rng() % n); };
  const IntegrityMode modes[] = {IntegrityMode::kHmacSha256, IntegrityMode::kAegis128, IntegrityMode::kAesGcm,
                                 IntegrityMode::kNone};
  const std::vector<std::string> words = {"-m", "0", "-O", "^has_journal", "-E", "lazy_journal_init", "-i", "1"};
  const std::vector<std::string> mount_words = {"noatime", "nodiratime", "discard", "ro", "sync"};
  for (int round = 0; round < 300; ++round) {
    StoragePolicy p;
    p.policy_version = static_cast<uint32_t>(1 + pick(std::numeric_limits<uint32_t>::max()));
    p.workload = pick(2) ? Cat("ns-", round, "/pod \"", pick(1000), "\"") : "";
    const size_t n = pick(6);
    std::vector<std::string> persistent;
    for (size_t i = 0; i < n; ++i) {
      VolumeRule v;
      v.id = Cat("v", i, pick(2) ? "_x.y-z" : "");
      v.kind = pick(2) ? VolumeKind::kPersistent : VolumeKind::kEphemeral;
      if (v.kind == VolumeKind::kPersistent) {
        v.key = *KeySource::Kbs(Cat("kbs:///repo/type/tag", i));
        v.create = pick(2) ? CreateRule::kIfBlank : CreateRule::kNever;
        v.blank_check = pick(2) ? BlankCheck::kFull : BlankCheck::kStructural;
        v.integrity = {modes[pick(4)]};
        persistent.push_back(v.id);
      } else {
        const size_t first = pick(4), count = 1 + pick(4);
        for (size_t k = 0; k < count; ++k) v.integrity.push_back(modes[(first + k) % 4]);
      }
      v.block_mode = pick(3) == 0;
      if (!v.block_mode) {
        v.fs_type = pick(2) ? "ext4" : "xfs";
        for (size_t k = pick(5); k > 0; --k) v.mkfs_options.push_back(words[pick(words.size())]);
        for (const auto& w : mount_words) {
          if (pick(2)) v.mount_options.push_back(w);
        }
      }
      v.read_only = pick(2);
      v.max_size_bytes = std::max<uint64_t>(1, rng() >> pick(64));
      v.min_size_bytes = pick(2) ? v.max_size_bytes >> pick(64) : 0;
      const Origin origins[] = {Origin::kSecureMount, Origin::kKataStorage, Origin::kAgentApi};
      const size_t first = pick(3), count = 1 + pick(3);
      for (size_t k = 0; k < count; ++k) v.routes.push_back(origins[(first + k) % 3]);
      if (pick(2)) v.container_path = Cat("/mnt/v", i);
      p.volumes.push_back(std::move(v));
    }
    p.max_ephemeral_volumes = static_cast<uint32_t>(pick(100));
    switch (pick(3)) {
      case 0:
        break;
      case 1:
        p.secure_mount_blank_device.kind = BlankDeviceRule::Kind::kEphemeral;
        break;
      default:
        if (!persistent.empty()) {
          p.secure_mount_blank_device = {BlankDeviceRule::Kind::kVolume, persistent[pick(persistent.size())]};
        }
    }
    SCOPED_TRACE(round);
    ExpectRoundTrip(p);
  }
}

TEST(StoragePolicyDeterminismTest, SpellingDoesNotChangeTheCanonicalText) {
  // Same policy: other key order, comments, inline tables (one line each, as
  // TOML 1.0 wants), integer and other-suffix sizes, defaults left out or
  // spelled out.
  const std::string respelled = R"(# a comment
policy_version = 3
schema_version = 1
workload = 'team-a/postgres-0'
schema = "cocostorage.dev/storage-policy"
secure_mount = { blank_device = "deny" }
limits.max_ephemeral_volumes = 1
volume = [
  { routes = ["secure-mount"], container_path = "/scratch", max_size = 17179869184, min_size = "1048576Ki", mount_options = ["noatime"], id = "scratch", kind = "ephemeral", key = "ephemeral", integrity = ["hmac-sha256"], mode = "filesystem", fs_type = "ext4", read_only = false, mkfs_options = ["-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128", "-E", "lazy_journal_init"] },
  { id = "pgdata", kind = "persistent", key = "kbs:///team-a/volume-keys/pgdata", create = "if-blank", integrity = ["hmac-sha256"], mode = "filesystem", fs_type = "ext4", mkfs_options = ["-m", "0"], mount_options = ["noatime"], min_size = "8192Mi", max_size = "64Gi", routes = ["secure-mount", "kata-storage"], container_path = "/var/lib/postgresql/data" },
]
)";
  auto a = ParseStoragePolicy(kDraftExample);
  auto b = ParseStoragePolicy(respelled);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(SerializeStoragePolicy(*a), SerializeStoragePolicy(*b));
  EXPECT_EQ(SerializeStoragePolicy(*a), SerializeStoragePolicy(*a));
}

// The exact bytes: the generator's output is hashed into the launch digest,
// so a change here changes every deployed policy's digest.
TEST(StoragePolicyDeterminismTest, CanonicalTextIsPinned) {
  EXPECT_EQ(SerializeStoragePolicy(DraftExampleStruct()), R"(schema = "cocostorage.dev/storage-policy"
schema_version = 1
policy_version = 3
workload = "team-a/postgres-0"

[limits]
max_ephemeral_volumes = 1

[secure_mount]
blank_device = "deny"

[[volume]]
id = "scratch"
kind = "ephemeral"
key = "ephemeral"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = ["-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128", "-E", "lazy_journal_init"]
mount_options = ["noatime"]
read_only = false
min_size = "1Gi"
max_size = "16Gi"
routes = ["secure-mount"]
container_path = "/scratch"

[[volume]]
id = "pgdata"
kind = "persistent"
key = "kbs:///team-a/volume-keys/pgdata"
create = "if-blank"
blank_check = "structural"
integrity = ["hmac-sha256"]
mode = "filesystem"
fs_type = "ext4"
mkfs_options = ["-m", "0"]
mount_options = ["noatime"]
read_only = false
min_size = "8Gi"
max_size = "64Gi"
routes = ["secure-mount", "kata-storage"]
container_path = "/var/lib/postgresql/data"
)");
}

TEST(StoragePolicyExamplesTest, DeployExamplesParseAndRoundTrip) {
  const std::string dir = Cat(COCOSTORAGE_SOURCE_DIR, "/deploy/examples/policy/");
  for (const char* name : {"postgres.toml", "ephemeral-only.toml", "block-kbs.toml"}) {
    SCOPED_TRACE(name);
    auto text = ReadFileToString(dir + name);
    ASSERT_TRUE(text.ok()) << text.status();
    auto p = ParseStoragePolicy(*text);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_FALSE(p->volumes.empty());
    ExpectRoundTrip(*p);
  }
  auto postgres = ParseStoragePolicy(*ReadFileToString(dir + "postgres.toml"));
  ASSERT_TRUE(postgres.ok());
  EXPECT_EQ(*postgres, DraftExampleStruct());  // the file is the draft's example
}

}  // namespace
}  // namespace cocostorage::agent::policy
