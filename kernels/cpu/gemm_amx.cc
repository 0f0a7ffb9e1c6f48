// The prefill GEMM of kernels::Linear on AMX tiles (CpuIsa::kAmx; bf16 and int8 weights from
// kAmxGemmMinRows rows of x, gemm_tiled.h), on the panels of gemm_panels.h, which are the B-tile
// layout of tdpbf16ps (pairs of bf16 columns) and tdpbssd (quads of int8 columns).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/gemm_panels.h"
#include "kernels/cpu/gemm_tiled.h"


namespace kvspan::kernels::internal {
namespace {

// Eight tile registers of 16 rows x 64 bytes (palette 1). A tile of x (A) is 16 rows of x x
// 64 bytes of columns, a tile of W (B) 16 lanes of a panel x 16 outputs (half a panel: its
// rows are kPanelCols lanes apart), a tile of sums (C) 16 rows x 16 outputs (int32 / fp32).
// Every tile instruction is an asm with its memory named ("memory" clobbers): GCC 12's
// intrinsics leave tileloadd's memory operand out, so stores to a buffer a tile then reads
// could legally be moved past it.

#define KVSPAN_TILE_LOAD(t, base, stride) \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #t : : "r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define KVSPAN_TILE_STORE(t, base, stride) \
  asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" : : "r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define KVSPAN_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::)
// c += a · b (AT&T order: b, a, c).
#define KVSPAN_TILE_DP(op, c, a, b) asm volatile(#op " %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Loads the calling thread's tile configuration: tmm0..7 all 16 x 64 bytes. ldtilecfg by asm
// with the whole 64-byte struct as its operand: GCC 12's _tile_loadconfig names only 8 bytes,
// so at -O3 the stores that fill the rest are dropped and the first tile instruction faults.
void ConfigureTiles() {
  static const TileConfig config = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  asm volatile("ldtilecfg %0" : : "m"(config));
}

// Frees the tile state (the kernel then need not save it at context switches).
void ReleaseTiles() { asm volatile("tilerelease" ::: "memory"); }

// Packed panels a task of the AMX GEMM keeps (in L2, beside a block of rows of x: the L2 of
// the CPUs with AMX, Sapphire Rapids and later, is 2 MB per core).
constexpr int64_t kAmxPanelBytes = int64_t{1} << 20;

// The AMX GEMM's walk: tasks of up to kAmxPanelBytes of consecutive panels (fewer when that
// would leave fewer than two tasks per thread), each packed once into the running thread's
// buffer; then, with the tiles configured, every block of `block_rows` rows of x against each
// panel of the task: rows(panel, j0, i0). The block of x is read from memory once per task
// and from L2 for the task's other panels (one panel per task read every row of x from
// memory again for every 32 outputs: 25 MB per panel for bf16 at m = 512, k = 8192).
template <class Element, class Rows>
void RunAmxPanelGroups(const LinearParams& p, int block_rows, const Rows& rows) {
  const int64_t panel_words = int64_t{PanelLanes<Element>(p.w.cols)} * kPanelCols;
  const int panels = (p.w.rows + kPanelCols - 1) / kPanelCols;
  const int threads = p.pool != nullptr ? p.pool->num_threads() : 1;
  // One block of rows: nothing to reuse, so one panel per task (the finest division).
  const int64_t fit = std::min<int64_t>(kAmxPanelBytes / (panel_words * 4), panels / (2 * threads));
  const int group = p.m <= block_rows ? 1 : static_cast<int>(std::max<int64_t>(1, fit));
  RunTasks(p.pool, (panels + group - 1) / group, [&](int64_t task) {
    thread_local std::vector<uint32_t> packed;
    const int first = static_cast<int>(task) * group, count = std::min(group, panels - first);
    packed.resize(count * panel_words);
    for (int g = 0; g < count; ++g) PackRowMajorPanelInto<Element>(p.w, (first + g) * kPanelCols, packed.data() + g * panel_words);
    ConfigureTiles();
    for (int i0 = 0; i0 < p.m; i0 += block_rows) {
      for (int g = 0; g < count; ++g) rows(packed.data() + g * panel_words, (first + g) * kPanelCols, i0);
    }
    ReleaseTiles();
  });
}

constexpr int kTileRows = 16;

// x of the bf16 GEMM: each row split exactly into three bf16 parts, hi = bf16(x), mid =
// bf16(x - hi), lo = x - hi - mid (both differences exact in fp32; lo has at most 8
// significant bits, so it is a bf16 exactly), part-major: [3][rows][ldx], zero past k and
// past p.m (dst's rows below p.m are written whole, the rest zeroed here). Finite x whose parts stay normal (|x| >= 2^-110: AMX treats bf16 subnormals as
// zero) is represented exactly.
KVSPAN_AVX512 void SplitRowsToBf16x3(const LinearParams& p, int64_t ldx, int rows, uint16_t* dst) {
  const int k = p.w.cols;
  const int64_t part = int64_t{rows} * ldx;
  for (int i = 0; i < p.m; ++i) {
    const float* src = p.x + int64_t{i} * k;
    uint16_t* out = dst + i * ldx;
    for (int64_t c = 0; c < ldx; c += 16) {
      const int64_t left = std::min<int64_t>(16, std::max<int64_t>(0, k - c));
      __m512 r = _mm512_maskz_loadu_ps(static_cast<__mmask16>((uint32_t{1} << left) - 1), src + c);
      for (int64_t at = 0; at < 3 * part; at += part) {
        const __m256i b = FloatToBf16x16(r);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + at + c), b);
        r = _mm512_sub_ps(r, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
      }
    }
  }
  for (int64_t at = 0; at < 3 * part; at += part) std::fill(dst + at + int64_t{p.m} * ldx, dst + at + part, uint16_t{0});
}

// bf16: per 16 rows of x and a panel, C tiles tmm0 / tmm1 sum hi · W, tmm2 / tmm3 mid · W
// and lo · W (the two halves of the panel), so that the sums of the small parts round
// against their own magnitude; y = (hi sum + small sum) + bias (+ beta · y).
KVSPAN_AVX512 void AmxBf16Rows(const LinearParams& p, const uint32_t* panel, const uint16_t* x, int64_t ldx,
                               int64_t part, int j0, int i0, float (*sums)[kTileRows][kPanelCols]) {
  KVSPAN_TILE_ZERO(0);
  KVSPAN_TILE_ZERO(1);
  KVSPAN_TILE_ZERO(2);
  KVSPAN_TILE_ZERO(3);
  const uint16_t* hi = x + int64_t{i0} * ldx;
  const int64_t x_stride = ldx * sizeof(uint16_t);
  constexpr int64_t kPanelStride = kPanelCols * sizeof(uint32_t);
  for (int64_t c = 0; c < ldx; c += 32) {  // 32 columns = 16 lanes of pairs
    const uint32_t* w = panel + c / 2 * kPanelCols;
    KVSPAN_TILE_LOAD(6, w, kPanelStride);
    KVSPAN_TILE_LOAD(7, w + 16, kPanelStride);
    KVSPAN_TILE_LOAD(4, hi + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 0, 4, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 1, 4, 7);
    KVSPAN_TILE_LOAD(5, hi + part + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 2, 5, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 3, 5, 7);
    KVSPAN_TILE_LOAD(4, hi + 2 * part + c, x_stride);
    KVSPAN_TILE_DP(tdpbf16ps, 2, 4, 6);
    KVSPAN_TILE_DP(tdpbf16ps, 3, 4, 7);
  }
  constexpr int64_t kSumStride = kPanelCols * sizeof(float);
  KVSPAN_TILE_STORE(0, &sums[0][0][0], kSumStride);
  KVSPAN_TILE_STORE(1, &sums[0][0][16], kSumStride);
  KVSPAN_TILE_STORE(2, &sums[1][0][0], kSumStride);
  KVSPAN_TILE_STORE(3, &sums[1][0][16], kSumStride);
  const PanelColumns cols = ColumnsOf(p, j0);
  for (int i = 0; i < std::min(kTileRows, p.m - i0); ++i) {
    const __m512 v0 = _mm512_add_ps(_mm512_load_ps(&sums[0][i][0]), _mm512_load_ps(&sums[1][i][0]));
    const __m512 v1 = _mm512_add_ps(_mm512_load_ps(&sums[0][i][16]), _mm512_load_ps(&sums[1][i][16]));
    StoreColumns(p, cols, i0 + i, j0, _mm512_add_ps(v0, cols.bias0), _mm512_add_ps(v1, cols.bias1));
  }
}

// int8: per 32 rows of x (two A tiles, tmm4 / tmm5) and a panel (two B tiles, tmm6 / tmm7),
// four C tiles of exact int32 sums Σ q · code (tdpbssd: signed x signed), then the int8
// epilogue of every other int8 kernel.
KVSPAN_AVX512 void AmxInt8Rows(const LinearParams& p, const uint32_t* panel, const TiledOperands& x, int j0, int i0,
                               int32_t (*sums)[kPanelCols]) {
  KVSPAN_TILE_ZERO(0);
  KVSPAN_TILE_ZERO(1);
  KVSPAN_TILE_ZERO(2);
  KVSPAN_TILE_ZERO(3);
  const uint8_t* x0 = static_cast<const uint8_t*>(x.x) + int64_t{i0} * x.ldx;
  const uint8_t* x1 = x0 + kTileRows * x.ldx;
  constexpr int64_t kPanelStride = kPanelCols * sizeof(uint32_t);
  for (int64_t c = 0; c < x.ldx; c += 64) {  // 64 columns = 16 lanes of quads
    const uint32_t* w = panel + c / 4 * kPanelCols;
    KVSPAN_TILE_LOAD(6, w, kPanelStride);
    KVSPAN_TILE_LOAD(7, w + 16, kPanelStride);
    KVSPAN_TILE_LOAD(4, x0 + c, x.ldx);
    KVSPAN_TILE_LOAD(5, x1 + c, x.ldx);
    KVSPAN_TILE_DP(tdpbssd, 0, 4, 6);
    KVSPAN_TILE_DP(tdpbssd, 1, 4, 7);
    KVSPAN_TILE_DP(tdpbssd, 2, 5, 6);
    KVSPAN_TILE_DP(tdpbssd, 3, 5, 7);
  }
  constexpr int64_t kSumStride = kPanelCols * sizeof(int32_t);
  KVSPAN_TILE_STORE(0, &sums[0][0], kSumStride);
  KVSPAN_TILE_STORE(1, &sums[0][16], kSumStride);
  KVSPAN_TILE_STORE(2, &sums[kTileRows][0], kSumStride);
  KVSPAN_TILE_STORE(3, &sums[kTileRows][16], kSumStride);
  const PanelColumns cols = ColumnsOf(p, j0);
  const Int8Scales scales = Int8ScalesOf(p, cols, j0);
  for (int i = 0; i < std::min(2 * kTileRows, p.m - i0); ++i) {
    StoreInt8Row(p, cols, scales, x.x_scales[i0 + i], i0 + i, j0, _mm512_load_si512(&sums[i][0]),
                 _mm512_load_si512(&sums[i][16]));
  }
}

#undef KVSPAN_TILE_LOAD
#undef KVSPAN_TILE_STORE
#undef KVSPAN_TILE_ZERO
#undef KVSPAN_TILE_DP

}  // namespace

void AmxGemmBf16(const LinearParams& p) {
  const int64_t ldx = (p.w.cols + 31) / 32 * 32;
  const int rows = (p.m + kTileRows - 1) / kTileRows * kTileRows;
  thread_local std::vector<uint16_t> parts;
  parts.resize(3 * int64_t{rows} * ldx);
  SplitRowsToBf16x3(p, ldx, rows, parts.data());
  const uint16_t* x = parts.data();  // this thread's buffer, for the pool's threads too
  RunAmxPanelGroups<uint16_t>(p, kTileRows, [&](const uint32_t* panel, int j0, int i0) {
    alignas(64) float sums[2][kTileRows][kPanelCols];
    AmxBf16Rows(p, panel, x, ldx, int64_t{rows} * ldx, j0, i0, sums);
  });
}

void AmxGemmInt8(const LinearParams& p) {
  const int rows = (p.m + 2 * kTileRows - 1) / (2 * kTileRows) * (2 * kTileRows);
  const TiledOperands x = PackInt8Activations(p, (p.w.cols + 63) / 64 * 64, /*flip=*/0, rows);
  RunAmxPanelGroups<int8_t>(p, 2 * kTileRows, [&](const uint32_t* panel, int j0, int i0) {
    alignas(64) int32_t sums[2 * kTileRows][kPanelCols];
    AmxInt8Rows(p, panel, x, j0, i0, sums);
  });
}

}  // namespace kvspan::kernels::internal
