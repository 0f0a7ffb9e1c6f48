#include "cachestore/key_scheme.h"

#include <numeric>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::cachestore {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::HasSubstr;

// The golden namespace of docs/key-scheme.md.
Namespace GoldenNamespace() {
  Namespace ns;
  ns.model_fingerprint = "llama-3-8b@sha256:0123";
  ns.policy_fingerprint = "int4";
  ns.span_length = 4;
  ns.tenant_salt = "";
  return ns;
}

TEST(KeySchemeTest, SerializationIsExact) {
  ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeNamespace(GoldenNamespace()));
  const std::string expected =
      std::string("kvspan.ns.v1") + std::string("\x16\x00\x00\x00", 4) + "llama-3-8b@sha256:0123" +
      std::string("\x04\x00\x00\x00", 4) + "int4" + std::string("\x04\x00\x00\x00", 4) +
      std::string("\x00\x00\x00\x00", 4);
  EXPECT_EQ(bytes, expected);
}

TEST(KeySchemeTest, GoldenValues) {
  // Also in docs/key-scheme.md; all four were cross-checked with xxhsum 0.8.1
  // (`xxhsum -H2` over the same bytes, `xxhsum -H3` for the checksum).
  ASSERT_OK_AND_ASSIGN(SpanKey ns, NamespaceKey(GoldenNamespace()));
  EXPECT_EQ(ns.ToHex(), "3b712b9a166df4b30d003c7288deb762");
  std::vector<uint32_t> tokens(10);
  std::iota(tokens.begin(), tokens.end(), 1);  // 1..10: two full spans of 4, 2 left over
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> chain, SpanKeyChain(GoldenNamespace(), tokens));
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0].ToHex(), "ee93407f7d1f4fdbc16e5a44c06cfcb2");
  EXPECT_EQ(chain[1].ToHex(), "0e84eafc8072bc01455c70afe8bf87f8");
  EXPECT_EQ(ValueChecksum("kvspan"), 0xc348646110f8d55full);
}

TEST(KeySchemeTest, ChainExtendsPrefix) {
  std::vector<uint32_t> tokens(64);
  std::iota(tokens.begin(), tokens.end(), 100);
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> longer, SpanKeyChain(GoldenNamespace(), tokens));
  ASSERT_OK_AND_ASSIGN(std::vector<SpanKey> shorter,
                       SpanKeyChain(GoldenNamespace(), absl::MakeSpan(tokens).subspan(0, 35)));
  ASSERT_EQ(longer.size(), 16u);
  ASSERT_EQ(shorter.size(), 8u);
  for (size_t i = 0; i < shorter.size(); ++i) EXPECT_EQ(longer[i], shorter[i]);
  ASSERT_OK_AND_ASSIGN(SpanKey ns, NamespaceKey(GoldenNamespace()));
  EXPECT_EQ(longer[0], NextSpanKey(ns, absl::MakeSpan(tokens).subspan(0, 4)));
  EXPECT_EQ(longer[1], NextSpanKey(longer[0], absl::MakeSpan(tokens).subspan(4, 4)));
}

TEST(KeySchemeTest, EveryNamespaceFieldChangesTheKey) {
  ASSERT_OK_AND_ASSIGN(SpanKey base, NamespaceKey(GoldenNamespace()));
  Namespace a = GoldenNamespace();
  a.model_fingerprint += "x";
  Namespace b = GoldenNamespace();
  b.policy_fingerprint = "int8";
  Namespace c = GoldenNamespace();
  c.span_length = 8;
  Namespace d = GoldenNamespace();
  d.tenant_salt = "tenant-1";
  for (const Namespace& ns : {a, b, c, d}) {
    ASSERT_OK_AND_ASSIGN(SpanKey k, NamespaceKey(ns));
    EXPECT_NE(k, base);
  }
  // Length prefixes keep field boundaries: ("ab","c") != ("a","bc").
  Namespace e = GoldenNamespace();
  e.model_fingerprint = "ab";
  e.policy_fingerprint = "c";
  Namespace f = GoldenNamespace();
  f.model_fingerprint = "a";
  f.policy_fingerprint = "bc";
  ASSERT_OK_AND_ASSIGN(SpanKey ke, NamespaceKey(e));
  ASSERT_OK_AND_ASSIGN(SpanKey kf, NamespaceKey(f));
  EXPECT_NE(ke, kf);
}

TEST(KeySchemeTest, MalformedNamespaceIsInvalidArgument) {
  Namespace ns = GoldenNamespace();
  ns.model_fingerprint = "";
  EXPECT_THAT(NamespaceKey(ns), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_fingerprint")));
  ns = GoldenNamespace();
  ns.policy_fingerprint = "";
  EXPECT_THAT(NamespaceKey(ns), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("policy_fingerprint")));
  ns = GoldenNamespace();
  ns.span_length = 0;
  EXPECT_THAT(SpanKeyChain(ns, {}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span_length")));
  ns = GoldenNamespace();
  ns.tenant_salt = std::string(kMaxFingerprintBytes + 1, 's');
  EXPECT_THAT(SerializeNamespace(ns), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tenant_salt")));
}

TEST(SpanKeyTest, ParsesBytesAndHex) {
  EXPECT_THAT(SpanKey::FromBytes(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 0")));
  EXPECT_THAT(SpanKey::FromBytes(std::string(17, 'a')), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SpanKey::FromHex("zz"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SpanKey::FromHex(std::string(32, 'g')), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(SpanKey k, SpanKey::FromHex("000102030405060708090a0b0c0d0e0f"));
  EXPECT_EQ(k.bytes[15], 15);
  EXPECT_EQ(k.ToHex(), "000102030405060708090a0b0c0d0e0f");
  ASSERT_OK_AND_ASSIGN(SpanKey same, SpanKey::FromBytes(k.ToBytes()));
  EXPECT_EQ(same, k);
  EXPECT_FALSE(k.IsZero());
  EXPECT_TRUE(SpanKey().IsZero());
}

}  // namespace
}  // namespace kvspan::cachestore
