// The node-side RBD map step without a kernel rbd module: KrbdMapper's
// command lines, idempotence and error mapping against a scripted
// CommandRunner, the parsers, and FakeRbdMapper (testing/csi/fake_rbd_mapper.h,
// which the node service tests will use).
#include "rbd_mapper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>

#include "cocostorage/testing/status_matchers.h"
#include "fake_rbd_mapper.h"

namespace cocostorage::csi {
namespace {

using ::cocostorage::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "AQDcVm1lAAAAABAAsecretsecretsecretsecret==";

// Answers each Run with the next scripted result and records the specs.
class ScriptedRunner : public CommandRunner {
 public:
  StatusOr<CommandResult> Run(const CommandSpec& spec) override {
    specs.push_back(spec);
    if (answers.empty()) return absl::InternalError("unexpected command");
    auto r = answers.front();
    answers.pop_front();
    return r;
  }
  void Answer(int exit_code, std::string out, std::string err = "") {
    answers.push_back(CommandResult{exit_code, 0, std::move(out), std::move(err)});
  }
  std::vector<std::string> Tail(size_t i, size_t from = 3) const {
    return {specs.at(i).argv.begin() + static_cast<long>(from), specs.at(i).argv.end()};
  }
  std::deque<StatusOr<CommandResult>> answers;
  std::vector<CommandSpec> specs;
};

RbdOptions Opts() {
  RbdOptions o;
  o.mon_host = "v2:10.0.0.1:3300";
  o.pool = "rbd";
  o.user = "csi";
  o.key = kKey;
  o.timeout = std::chrono::seconds(7);
  return o;
}

const RbdImageRef kRef{"rbd", "coco-vol-pvc-1"};
constexpr char kListed[] =
    R"([{"id":"0","pool":"rbd","namespace":"","name":"coco-vol-pvc-1","snap":"-","device":"/dev/rbd3"}])";

TEST(RbdDeviceRefTest, RoundTripsTheBackendsReference) {
  auto r = ParseRbdDeviceRef(RbdDeviceRef("rbd", "coco-vol-a"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->pool, "rbd");
  EXPECT_EQ(r->image, "coco-vol-a");
  for (const char* bad : {"/var/lib/x.img", "rbd:", "rbd:pool", "rbd:/img", "rbd:pool/", "rbd:pool/ns/img",
                          "rbd:pool/img@snap", "rbd:pool/i mg"}) {
    EXPECT_THAT(ParseRbdDeviceRef(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(RbdDeviceListTest, FindsTheHeadMappingOnly) {
  EXPECT_EQ(*MappedDeviceFromList("[]", kRef), "");
  EXPECT_EQ(*MappedDeviceFromList(kListed, kRef), "/dev/rbd3");
  EXPECT_EQ(*MappedDeviceFromList(kListed, RbdImageRef{"other", "coco-vol-pvc-1"}), "");
  // A snapshot or a namespace mapping of the same name is not the volume.
  EXPECT_EQ(*MappedDeviceFromList(
                R"([{"pool":"rbd","namespace":"","name":"coco-vol-pvc-1","snap":"s1","device":"/dev/rbd1"},
                    {"pool":"rbd","namespace":"ns","name":"coco-vol-pvc-1","snap":"-","device":"/dev/rbd2"}])",
                kRef),
            "");
  EXPECT_THAT(MappedDeviceFromList("rbd: error", kRef), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(MappedDeviceFromList(R"({"a":1})", kRef), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(MappedDeviceFromList(R"([{"pool":"rbd","name":"coco-vol-pvc-1","device":"/etc/passwd"}])", kRef),
              StatusIs(absl::StatusCode::kInternal));
}

TEST(RbdCommandStatusTest, ErrnoInStderrMapsLikeLibrbd) {
  EXPECT_THAT(RbdCommandStatus(22, "rbd: map failed: (13) Permission denied\n", "map"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("cephx")));
  EXPECT_THAT(RbdCommandStatus(22,
                               "In some cases useful info is found in syslog - try \"dmesg | tail\".\n"
                               "rbd: map failed: (2) No such file or directory\n",
                               "map"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(RbdCommandStatus(22, "rbd: map failed: (110) Connection timed out\n", "map"),
              StatusIs(absl::StatusCode::kUnavailable));
  // What rbd 17 prints for a wrong key or a dead monitor (no errno in the
  // text; the exit code is it).
  constexpr char kNoConnect[] =
      "2026-12-02T13:03:34.609+0000 7f8d -1 monclient(hunting): handle_auth_bad_method\n"
      "rbd: couldn't connect to the cluster!\n";
  EXPECT_THAT(RbdCommandStatus(13, kNoConnect, "map"), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(RbdCommandStatus(110, kNoConnect, "map"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(RbdCommandStatus(1, kNoConnect, "map"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(RbdCommandStatus(22, "rbd: something odd\n", "list"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("something odd")));
}

TEST(KrbdMapperTest, MapsOnceWithTheKeyOnlyInTheEnvironment) {
  auto runner = std::make_shared<ScriptedRunner>();
  auto m = NewKrbdMapper(runner, std::chrono::seconds(10), "");
  ASSERT_TRUE(m.ok()) << m.status();
  runner->Answer(0, "[]");
  runner->Answer(0, "/dev/rbd0\n");
  auto dev = (*m)->Map(Opts(), kRef);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(*dev, "/dev/rbd0");
  ASSERT_EQ(runner->specs.size(), 2u);
  // The list is the kernel's: no monitor, no key.
  EXPECT_THAT(runner->specs[0].argv, ElementsAre("rbd", "-c", "/dev/null", "device", "list", "--format", "json"));
  EXPECT_TRUE(runner->specs[0].env.empty());
  EXPECT_THAT(runner->specs[1].argv,
              ElementsAre("rbd", "-c", "/dev/null", "-m", "v2:10.0.0.1:3300", "--id", "csi", "--client-mount-timeout",
                          "7", "--rados-mon-op-timeout", "7", "--rados-osd-op-timeout", "7", "device", "map",
                          "--exclusive", "rbd/coco-vol-pvc-1"));
  EXPECT_THAT(runner->specs[1].env, ElementsAre(std::string("CEPH_ARGS=--key=") + kKey));
  for (const auto& s : runner->specs) {
    for (const auto& a : s.argv) EXPECT_THAT(a, Not(HasSubstr(kKey)));
    EXPECT_GT(s.timeout, std::chrono::seconds(7));  // bounded, and after rbd's own timeouts
    EXPECT_LT(s.timeout, std::chrono::minutes(1));
  }

  // A retried map finds the existing mapping and does not map again.
  runner->Answer(0, kListed);
  dev = (*m)->Map(Opts(), kRef);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(*dev, "/dev/rbd3");
  EXPECT_EQ(runner->specs.size(), 3u);
}

TEST(KrbdMapperTest, UnmapsByDeviceAndNotMappedIsSuccess) {
  auto runner = std::make_shared<ScriptedRunner>();
  auto m = *NewKrbdMapper(runner, std::chrono::seconds(10), "");
  runner->Answer(0, kListed);
  runner->Answer(0, "");
  ASSERT_TRUE(m->Unmap(kRef).ok());
  EXPECT_THAT(runner->Tail(1), ElementsAre("device", "unmap", "/dev/rbd3"));
  EXPECT_TRUE(runner->specs[1].env.empty());  // no key needed to unmap
  runner->Answer(0, "[]");
  EXPECT_TRUE(m->Unmap(kRef).ok());
  EXPECT_EQ(runner->specs.size(), 3u);  // only the list
}

TEST(KrbdMapperTest, FailuresAreMappedAndNameNoKey) {
  auto runner = std::make_shared<ScriptedRunner>();
  auto m = *NewKrbdMapper(runner, std::chrono::seconds(10), "");
  runner->Answer(0, "[]");
  runner->Answer(22, "", "rbd: sysfs write failed\nrbd: map failed: (13) Permission denied\n");
  auto dev = m->Map(Opts(), kRef);
  EXPECT_THAT(dev, StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rbd/coco-vol-pvc-1")));
  EXPECT_THAT(dev.status().message(), Not(HasSubstr(kKey)));
  // Should Ceph ever quote the key, it does not reach the error.
  runner->Answer(0, "[]");
  runner->Answer(1, "", std::string("auth: failed to decode key '") + kKey + "'\n");
  dev = m->Map(Opts(), kRef);
  EXPECT_FALSE(dev.ok());
  EXPECT_THAT(dev.status().message(), Not(HasSubstr(kKey)));
  runner->Answer(0, "[]");
  runner->Answer(0, "no device here\n");
  EXPECT_THAT(m->Map(Opts(), kRef), StatusIs(absl::StatusCode::kInternal));
  runner->answers.push_back(absl::DeadlineExceededError("rbd timed out"));
  EXPECT_THAT(m->MappedDevice(kRef), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(KrbdMapperTest, RefusesBadOptions) {
  auto runner = std::make_shared<ScriptedRunner>();
  auto m = *NewKrbdMapper(runner, std::chrono::seconds(10), "");
  auto o = Opts();
  o.key.clear();
  EXPECT_THAT(m->Map(o, kRef), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(runner->specs.empty());  // refused before anything runs
  EXPECT_THAT(NewKrbdMapper(nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NewKrbdMapper(runner, std::chrono::seconds(0)), StatusIs(absl::StatusCode::kInvalidArgument));
  // A node without the rbd module: modprobe is tried, then said so; no rbd run.
  auto no_module = *NewKrbdMapper(runner, std::chrono::seconds(10), "/nonexistent/sys/bus/rbd");
  runner->Answer(0, "");
  EXPECT_THAT(no_module->Map(Opts(), kRef),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("rbd kernel module")));
  ASSERT_EQ(runner->specs.size(), 1u);
  EXPECT_THAT(runner->specs[0].argv, ElementsAre("modprobe", "rbd"));
}

TEST(FakeRbdMapperTest, IsIdempotentAndInjectsFailures) {
  FakeRbdMapper m;
  EXPECT_EQ(*m.Map(Opts(), kRef), "/dev/rbd0");
  EXPECT_EQ(*m.Map(Opts(), kRef), "/dev/rbd0");
  EXPECT_EQ(*m.Map(Opts(), RbdImageRef{"rbd", "b"}), "/dev/rbd1");
  EXPECT_EQ(*m.MappedDevice(kRef), "/dev/rbd0");
  EXPECT_TRUE(m.Unmap(kRef).ok());
  EXPECT_TRUE(m.Unmap(kRef).ok());
  EXPECT_EQ(*m.MappedDevice(kRef), "");
  m.FailNext(absl::UnavailableError("down"));
  EXPECT_THAT(m.Map(Opts(), kRef), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(*m.Map(Opts(), kRef), "/dev/rbd2");
  EXPECT_EQ(m.map_calls(), 5);
}

}  // namespace
}  // namespace cocostorage::csi
