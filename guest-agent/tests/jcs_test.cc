#include "kbs/jcs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <bit>
#include <cstdint>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "kbs_test_util.h"

namespace cocostorage::agent::kbs {
namespace {

using ::cocostorage::testing::StatusIs;
using nlohmann::json;

std::string Jcs(const json& value) {
  auto out = Canonicalize(value);
  EXPECT_OK(out);
  return out.ok() ? *out : std::string("<error>");
}

// RFC 8785 §3.2.2 (the sample of §3.2.4's canonicalization, input and output).
TEST(JcsTest, Rfc8785SampleObject) {
  const json input = json::parse(R"({
    "numbers": [333333333.33333329, 1E30, 4.50,
                2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  })");
  EXPECT_EQ(Jcs(input),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
            "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

// RFC 8785 §3.2.3: members sorted by UTF-16 code units, so the emoji
// (surrogates D83D DE00) sorts before U+FB33 although its UTF-8 bytes and its
// code point are greater.
TEST(JcsTest, Rfc8785SortsByUtf16CodeUnits) {
  const json input = json::parse(R"({
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
    "</script>": "Browser Challenge"
  })");
  EXPECT_EQ(Jcs(input),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"</script>\":\"Browser Challenge\","
            "\"\xc2\x80\":\"Control\",\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\","
            "\"\xe2\x82\xac\":\"Euro Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\","
            "\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");
}

TEST(JcsTest, SortsNestedObjectsAndKeepsArrayOrder) {
  const json input = json::parse(R"({"b":[3,1,{"z":1,"y":2}],"a":{"d":{},"c":[]}})");
  EXPECT_EQ(Jcs(input), R"({"a":{"c":[],"d":{}},"b":[3,1,{"y":2,"z":1}]})");
  EXPECT_EQ(Jcs(json::object()), "{}");
  EXPECT_EQ(Jcs(json::array()), "[]");
  EXPECT_EQ(Jcs(json("")), "\"\"");
}

double FromBits(uint64_t bits) { return std::bit_cast<double>(bits); }

// RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript form.
TEST(JcsTest, Rfc8785AppendixBNumbers) {
  const std::vector<std::pair<uint64_t, std::string>> rows = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},  // minus zero
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},  // round to even
  };
  for (const auto& [bits, text] : rows) EXPECT_EQ(Jcs(json(FromBits(bits))), text) << std::hex << bits;
}

TEST(JcsTest, RefusesNanAndInfinity) {
  for (uint64_t bits : {0x7fffffffffffffffull, 0x7ff8000000000000ull, 0x7ff0000000000000ull, 0xfff0000000000000ull}) {
    EXPECT_THAT(Canonicalize(json(FromBits(bits))), StatusIs(absl::StatusCode::kInvalidArgument)) << std::hex << bits;
  }
  EXPECT_THAT(Canonicalize(json{{"a", {1, std::numeric_limits<double>::infinity()}}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(JcsTest, NumbersParsedFromText) {
  EXPECT_EQ(Jcs(json::parse("[1.0, -0.0, 100, -7, 1e21, 1e-7, 0.1, 123456789012345680000]")),
            "[1,0,100,-7,1e+21,1e-7,0.1,123456789012345680000]");
}

TEST(JcsTest, IntegersMustBeExactDoubles) {
  constexpr int64_t kMax = int64_t{1} << 53;
  EXPECT_EQ(Jcs(json(kMax)), "9007199254740992");
  EXPECT_EQ(Jcs(json(-kMax)), "-9007199254740992");
  EXPECT_EQ(Jcs(json(static_cast<uint64_t>(kMax))), "9007199254740992");
  EXPECT_EQ(Jcs(json(uint64_t{0})), "0");
  EXPECT_THAT(Canonicalize(json(kMax + 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Canonicalize(json(-kMax - 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Canonicalize(json(std::numeric_limits<int64_t>::min())), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Canonicalize(json(std::numeric_limits<uint64_t>::max())), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Canonicalize(json::parse("[18446744073709551615]")), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(JcsTest, EscapesOnlyWhatRfc8785Escapes) {
  const std::string input = std::string("\"\\\b\f\n\r\t", 7) + std::string("\x00\x01\x1f", 3) + "\x7f/<>&'\xc2\x80";
  EXPECT_EQ(Jcs(json(input)), "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f\x7f/<>&'\xc2\x80\"");
  EXPECT_EQ(Jcs(json{{std::string("\x0b", 1), 1}}), "{\"\\u000b\":1}");
}

TEST(JcsTest, RefusesInvalidUtf8InValuesAndNames) {
  const std::vector<std::string> bad = {
      "\xc0\xaf",          // overlong '/'
      "\xe0\x80\xaf",      // overlong, three bytes
      "\xed\xa0\x80",      // a surrogate
      "\xf4\x90\x80\x80",  // beyond U+10FFFF
      "\xe2\x82",          // truncated
      "\x80",              // lone continuation byte
      "\xff",              // never valid
      "a\xc3(",            // bad continuation
  };
  for (const std::string& s : bad) {
    EXPECT_THAT(Canonicalize(json(s)), StatusIs(absl::StatusCode::kInvalidArgument)) << HexEncode(s);
    EXPECT_THAT(Canonicalize(json{{s, 1}}), StatusIs(absl::StatusCode::kInvalidArgument)) << HexEncode(s);
  }
  EXPECT_EQ(Jcs(json("\xf4\x8f\xbf\xbf")), "\"\xf4\x8f\xbf\xbf\"");  // U+10FFFF itself is fine
}

TEST(JcsTest, RefusesBinaryValues) {
  EXPECT_THAT(Canonicalize(json::binary({1, 2, 3})), StatusIs(absl::StatusCode::kInvalidArgument));
}

// kbs-protocol.md's public check value for the report-data binding.
TEST(JcsTest, KbsProtocolCheckValue) {
  const json input = {{"b", 1}, {"a", "test"}, {"c", {{"d", "e"}}}};
  const std::string canonical = Jcs(input);
  EXPECT_EQ(canonical, R"({"a":"test","b":1,"c":{"d":"e"}})");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  ASSERT_EQ(EVP_Digest(canonical.data(), canonical.size(), digest, &digest_len, EVP_sha384(), nullptr), 1);
  EXPECT_EQ(HexEncode(std::string(reinterpret_cast<const char*>(digest), digest_len)),
            "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3");
}

// Random JSON of BMP-only member names, strings and small integers: the
// subset where Python's sorted, compact, non-ASCII-escaping json.dumps is
// JCS (Python sorts by code point, which is UTF-16 order inside the BMP).
class RandomJson {
 public:
  explicit RandomJson(uint32_t seed) : rng_(seed) {}

  json Value(int depth) {
    switch (Pick(depth >= 3 ? 4 : 6)) {
      case 0:
        return json(nullptr);
      case 1:
        return json(Pick(2) == 0);
      case 2:
        return json(static_cast<int64_t>(Pick(2000001)) - 1000000);
      case 3:
        return json(Text(/*allow_astral=*/true));
      case 4: {
        json a = json::array();
        for (int i = Pick(4); i > 0; --i) a.push_back(Value(depth + 1));
        return a;
      }
      default: {
        json o = json::object();
        for (int i = Pick(6); i > 0; --i) o[Text(/*allow_astral=*/false)] = Value(depth + 1);
        return o;
      }
    }
  }

 private:
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  std::string Text(bool allow_astral) {
    static const std::vector<std::string> kPieces = {
        "a",
        "Z",
        "0",
        "_",
        " ",
        "\"",
        "\\",
        "/",
        "\n",
        "\t",
        "\b",
        "\x01",
        "\x1f",
        "\x7f",
        "\xc2\x80",
        "\xc3\xa9",      // é
        "\xe2\x82\xac",  // €
        "\xe4\xb8\xad",  // 中
        "\xee\x80\x80",  // U+E000
        "\xef\xac\xb3",  // U+FB33
        "\xef\xbf\xbd",  // U+FFFD
    };
    std::string out;
    for (int i = Pick(5); i > 0; --i) {
      if (allow_astral && Pick(8) == 0) {
        out += "\xf0\x9f\x98\x80";  // U+1F600
      } else {
        out += kPieces[static_cast<size_t>(Pick(static_cast<int>(kPieces.size())))];
      }
    }
    return out;
  }

  std::mt19937 rng_;
};

TEST(JcsTest, AgreesWithPythonJsonOnBmpObjects) {
  if (!kbs_testing::HavePython()) GTEST_SKIP() << kbs_testing::kPython << " is missing";
  auto dir = cocostorage::testing::TempDir::Make();
  ASSERT_OK(dir);
  const std::string path = dir->path() + "/object.json";
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    RandomJson gen(seed);
    json object = json::object();
    for (int i = 0; i < 8; ++i) object[std::string(1, static_cast<char>('a' + i)) + "\xe2\x82\xac"] = gen.Value(1);
    {
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      f << object.dump();
      ASSERT_TRUE(f.good());
    }
    auto expected =
        kbs_testing::RunCommand({kbs_testing::kPython, "-c",
                                 "import json, sys\n"
                                 "o = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                                 "s = json.dumps(o, sort_keys=True, separators=(',', ':'), ensure_ascii=False)\n"
                                 "sys.stdout.buffer.write(s.encode('utf-8'))\n",
                                 path});
    ASSERT_OK(expected);
    EXPECT_EQ(Jcs(object), *expected) << "seed " << seed;
  }
}

}  // namespace
}  // namespace cocostorage::agent::kbs
