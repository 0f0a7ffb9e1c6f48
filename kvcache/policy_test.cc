#include "kvcache/policy.h"

#include <cstdio>  // std::remove
#include <fstream>
#include <set>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvspan::kvcache {
namespace {

using ::kvspan::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

TEST(PolicyTest, ParsesAndCanonicalizes) {
  const std::pair<const char*, const char*> cases[] = {
      {"bf16", "bf16"},
      {"int4", "int4(g=32)"},
      {"sinks(4)+window(16)/int4(g=32)", "sinks(n=4)+window(n=16)/int4(g=32)"},
      {"window(n=16)+sinks(n=4)/int4", "sinks(n=4)+window(n=16)/int4(g=32)"},
      {"keynorm(keep=0.25)/int8", "keynorm(keep=0.25)/int8(g=32)"},
      {"kvmerger(sim=0.9,sigma=1.0)/bf16", "kvmerger(sim=0.9,sigma=1)/bf16"},
      {"mikv(hi=int8,lo=int2,keep_hi=0.2,g=32)", "mikv(hi=int8,lo=int2,keep_hi=0.2,g=32)"},
      {"mikv", "mikv(hi=int8,lo=int2,keep_hi=0.2,g=32)"},
      {"razor(sinks=4,window=8,retrieval=2.1:0.3:0.3)/bf16",
       "razor(sinks=4,window=8,retrieval=0.3:2.1)/bf16"},
      {"sentinel-analogue(k=4)/bf16", "sentinel-analogue(k=4)/bf16"},
      {"sinks(2)+snapkv(keep=0.1)/int4(g=64)",
       "sinks(n=2)+snapkv(keep=0.1,obs=16,pool=7)/int4(g=64)"},
      {"int8/minicache(from=0.5)", "int8(g=32)/minicache(from=0.5,t=0.5,retain=0.05)"},
      {"bf16/minicache(retain=0,t=0.25,from=1)", "bf16/minicache(from=1,t=0.25,retain=0)"},
      {"bf16/pod", "bf16/pod(from=0,group=2,sinks=4,window=16)"},
      {"int4(g=16)/pod(group=4,window=0)", "int4(g=16)/pod(from=0,group=4,sinks=4,window=0)"},
      {"keynorm(keep=1e-1)/fp16", "keynorm(keep=0.1)/fp16"},
  };
  for (const auto& [in, canonical] : cases) {
    ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(in));
    EXPECT_EQ(p.ToString(), canonical) << in;
    ASSERT_OK_AND_ASSIGN(Policy again, ParsePolicy(p.ToString()));
    EXPECT_EQ(again, p) << in;
    EXPECT_EQ(again.ToString(), canonical);
    EXPECT_EQ(again.fingerprint(), p.fingerprint());
  }
}

TEST(PolicyTest, Fields) {
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy("window(3)+sinks(2)+kvmerger(0.8)/int2(g=16)"));
  ASSERT_EQ(p.reducers.size(), 3u);
  EXPECT_EQ(p.FindReducer("sinks")->Number("n"), 2);
  EXPECT_EQ(p.FindReducer("window")->Number("n"), 3);
  EXPECT_EQ(p.main_reducer()->name, "kvmerger");
  EXPECT_EQ(p.main_reducer()->Number("sim"), 0.8);
  EXPECT_EQ(p.main_reducer()->Number("sigma"), 1.0);
  EXPECT_EQ(p.codec.name, "int2");
  EXPECT_EQ(p.codec.Number("g"), 16);
  EXPECT_FALSE(p.sharing.has_value());
}

TEST(PolicyTest, QueryAgnostic) {
  for (const char* s :
       {"bf16", "sinks(4)+window(4)/int4", "keynorm(0.5)/int8", "mikv", "kvmerger/bf16",
        "razor/bf16", "sentinel-analogue/bf16", "expected-attn/int4"}) {
    ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(s));
    EXPECT_TRUE(p.query_agnostic()) << s;
  }
  ASSERT_OK_AND_ASSIGN(Policy snap, ParsePolicy("snapkv(keep=0.2)/bf16"));
  EXPECT_FALSE(snap.query_agnostic());
}

TEST(PolicyTest, RetrievalHeadsFromFile) {
  const std::string path = ::testing::TempDir() + "/retrieval_heads.txt";
  {
    std::ofstream out(path);
    out << "# layer head\n1 0\n0.1\n\n1 0\n";
  }
  ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy("razor(retrieval=@" + path + ")/bf16"));
  EXPECT_THAT(p.main_reducer()->Get("retrieval").heads, ElementsAre(Pair(0, 1), Pair(1, 0)));
  EXPECT_EQ(p.ToString(), "razor(sinks=4,window=8,retrieval=0.1:1.0)/bf16");
  EXPECT_THAT(ParsePolicy("razor(retrieval=@" + path + ".missing)/bf16"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("retrieval_heads.txt.missing")));
  {
    std::ofstream out(path);
    out << "1 x\n";
  }
  EXPECT_THAT(ParsePolicy("razor(retrieval=@" + path + ")/bf16"),
              StatusIs(kInvalid, HasSubstr("bad head '1 x'")));
  std::remove(path.c_str());
}

struct ErrorCase {
  const char* policy;
  const char* message;
};

TEST(PolicyTest, ErrorsNameTokenAndPosition) {
  const ErrorCase cases[] = {
      {"", "empty policy"},
      {"foo/bf16", "unknown reducer 'foo' at position 0"},
      {"sinks(4)+lru(3)/bf16", "unknown reducer 'lru' at position 9"},
      {"keynorm(ratio=0.5)/bf16",
       "unknown parameter 'ratio' of 'keynorm' (parameters: keep) at position 8"},
      {"bf16(g=32)", "unknown parameter 'g' of 'bf16' (parameters: none) at position 5"},
      {"keynorm(keep=abc)/bf16", "bad value in keynorm(keep=abc): not a number at position 13"},
      {"keynorm(keep=nan)/bf16", "not a number at position 13"},
      {"sinks(n=2.5)/bf16", "bad value in sinks(n=2.5): not an integer at position 8"},
      {"keynorm(keep=1.5)/bf16",
       "value out of range in keynorm(keep=1.5): want (0, 1] at position 13"},
      {"keynorm(keep=0)/bf16", "want (0, 1] at position 13"},
      {"int4(g=0)", "value out of range in int4(g=0): want [1, 65536] at position 7"},
      {"kvmerger(sigma=0)/bf16", "value out of range in kvmerger(sigma=0)"},
      {"mikv(hi=int3)",
       "bad value in mikv(hi=int3): want bf16, fp16, int8, int4 or int2 at position 8"},
      {"mikv(lo=mikv)", "bad value in mikv(lo=mikv)"},
      {"keynorm(keep=0.5,keep=0.2)/bf16", "duplicate parameter 'keep' of 'keynorm' at position 17"},
      {"kvmerger(sim=0.9,1.0)/bf16",
       "parameter '1.0' of 'kvmerger' needs a name (name=value) at position 17"},
      {"keynorm(keep=0.5)",
       "missing codec (want '/<codec>', e.g. '/bf16' or '/int4(g=32)') at position 17"},
      {"sinks(4)+window(4)", "missing codec"},
      {"int4/int8", "duplicate codec 'int8' at position 5"},
      {"keynorm(0.5)/int4/int8", "duplicate codec 'int8' at position 18"},
      {"keynorm(0.5)+int4", "codec 'int4' must follow '/', not '+' at position 13"},
      {"int4/keynorm(0.5)", "reducer 'keynorm' after the codec at position 5"},
      {"keynorm(0.5)/sinks(4)/int4", "expected a codec, found 'sinks' at position 13"},
      {"keynorm(0.5)+kvmerger/int4",
       "second main reducer 'kvmerger' (already 'keynorm'; at most one besides sinks/window) at "
       "position 13"},
      {"sinks(4)+sinks(2)/int4", "duplicate reducer 'sinks' at position 9"},
      {"int4+minicache", "'+' may only join reducers at position 4"},
      {"minicache/int4", "sharing 'minicache' must follow '<codec>/' at position 0"},
      {"int4/minicache/pod", "duplicate sharing 'pod' at position 15"},
      {"int4/minicache(t=1.5)", "value out of range in minicache(t=1.5): want [0, 1]"},
      {"int4/minicache(retain=-0.1)", "value out of range in minicache(retain=-0.1)"},
      {"int4/pod(group=0)", "value out of range in pod(group=0): want [1, 1024]"},
      {"int4/pod(sinks=1.5)", "bad value in pod(sinks=1.5): not an integer"},
      {"int4/pod(size=2)", "unknown parameter 'size' of 'pod' (parameters: from, group, sinks, window)"},
      {"int4(g=32) ", "trailing junk ' ' at position 10"},
      {"int4(g=32)x", "trailing junk 'x' at position 10"},
      {"int4(g=32", "missing ')' after 'int4' at position 9"},
      {"int4/", "expected a name at position 5"},
      {"keynorm(keep=0.5/bf16", "bad value in keynorm(keep=0.5/bf16): not a number at position 13"},
      {"keynorm(keep=0.5", "missing ')' after 'keynorm' at position 16"},
      {"+int4", "unexpected '+' at position 0"},
      {"razor(retrieval=1.x)/bf16", "bad head '1.x' in retrieval (want layer.head) at position 16"},
      {"razor(retrieval=1.2048)/bf16", "bad head '1.2048'"},
  };
  for (const ErrorCase& c : cases) {
    EXPECT_THAT(ParsePolicy(c.policy), StatusIs(kInvalid, HasSubstr(c.message))) << c.policy;
  }
}

// Golden values: the fingerprint is part of every cache-store key, so a change here
// invalidates every stored span. Change them only with a namespace migration.
TEST(PolicyTest, FingerprintsAreStableGoldenValues) {
  const std::pair<const char*, uint64_t> golden[] = {
      {"bf16", 0x6916919e3899e7ecull},
      {"sinks(4)+window(16)/int4", 0x80eb8ad934257959ull},
      {"keynorm(keep=0.25)/int8", 0x6d0d50b3b32ed34dull},
      {"mikv", 0x7660faed7f5ece1aull},
  };
  for (const auto& [text, want] : golden) {
    ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(text));
    EXPECT_EQ(p.fingerprint(), want) << text;
  }
}

TEST(PolicyTest, FingerprintsDistinctForDistinctPolicies) {
  const char* policies[] = {"bf16",
                            "fp16",
                            "int8",
                            "int4",
                            "int2",
                            "int4(g=64)",
                            "sinks(4)/int4",
                            "sinks(5)/int4",
                            "window(4)/int4",
                            "sinks(4)+window(4)/int4",
                            "keynorm(0.25)/int4",
                            "keynorm(0.5)/int4",
                            "kvmerger/bf16",
                            "kvmerger(sim=0.8)/bf16",
                            "razor/bf16",
                            "razor(retrieval=0.0)/bf16",
                            "sentinel-analogue(k=4)/bf16",
                            "sentinel-analogue(k=8)/bf16",
                            "mikv",
                            "mikv(keep_hi=0.5)",
                            "snapkv/bf16",
                            "expected-attn/bf16",
                            "bf16/minicache",
                            "bf16/minicache(t=0.25)",
                            "bf16/pod",
                            "bf16/pod(group=4)"};
  std::set<uint64_t> seen;
  std::set<std::string> canon;
  for (const char* s : policies) {
    ASSERT_OK_AND_ASSIGN(Policy p, ParsePolicy(s));
    seen.insert(p.fingerprint());
    canon.insert(p.ToString());
  }
  EXPECT_EQ(canon.size(), std::size(policies));
  EXPECT_EQ(seen.size(), std::size(policies));
}

TEST(PolicyTest, OnlyQueryAgnosticSpansAreStorable) {
  EXPECT_OK(CheckStorable("int4(g=32)"));
  EXPECT_OK(CheckStorable("expected-attn(keep=0.5,future=512)/int4(g=32)"));
  EXPECT_OK(CheckStorable("sentinel/fp16"));
  EXPECT_OK(CheckStorable("int4(g=32)/pod(from=0,group=2,sinks=4,window=16)"));
  EXPECT_THAT(CheckStorable("snapkv(keep=0.5,obs=16,pool=7)/int8(g=32)"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("query-aware")));
  EXPECT_THAT(CheckStorable("dense"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not parse")));
}

}  // namespace
}  // namespace kvspan::kvcache
