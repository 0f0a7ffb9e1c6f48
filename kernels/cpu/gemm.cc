// kernels::Linear: the dispatch of gemm.h (fp32 through OpenBLAS, other formats
// through the tiled kernels of gemm_tiled_*.cc).
#include "kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm_tiled.h"

namespace kvspan::kernels {
namespace {

// Rows of W per ParallelFor task in the tiled kernels: enough work per task to
// amortize the task hand-out, small enough to balance 2..16 threads on a
// 2048-row matrix.
constexpr int kRowsPerTask = 64;
// At m = 1, W per task at least (RunTiles). linear_bench --m 1 --dram-mib 512 on the Intel Xeon
// with AMX, 2 threads (2026-12-03), 64-row tasks -> 512 KB: 16384x2048 int8 26.4-26.9 -> 30.8
// GB/s, int4 21.8-22.1 -> 29.1; tasks of 2 and 8 MB were no better; 2048x8192 (8 KB rows: 64
// rows either way) unchanged.
constexpr int64_t kMinStreamTaskBytes = int64_t{512} << 10;
// Packed x per pass of the tiled kernels over a task's W rows (see RunTiles).
constexpr int64_t kChunkBytes = int64_t{128} << 10;

void AddBias(const LinearParams& p) {
  if (p.bias == nullptr) return;
  const int n = p.w.rows;
  for (int i = 0; i < p.m; ++i) {
    float* row = p.y + int64_t{i} * n;
    for (int j = 0; j < n; ++j) row[j] += p.bias[j];
  }
}

void LinearF32(const LinearParams& p) {
  const int n = p.w.rows, k = p.w.cols;
  const float* w = static_cast<const float*>(p.w.data);
  if (p.m == 1) {
    // GEMV: y[n] = W[n, k] · x[k]. OpenBLAS' sgemm with m == 1 is slower than
    // sgemv.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, p.x, 1, p.beta, p.y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, n, k, 1.0f, p.x, k, w, k, p.beta, p.y, n);
  }
  AddBias(p);
}

}  // namespace

namespace internal {

TiledOperands PackInt8Activations(const LinearParams& p, int64_t ldx, uint8_t flip, int rows) {
  const int k = p.w.cols;
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<float> scales;
  codes.assign(std::max(p.m, rows) * ldx, 0);
  scales.resize(p.m);
  for (int i = 0; i < p.m; ++i) {
    uint8_t* row = codes.data() + i * ldx;
    scales[i] = QuantizeRowInt8(p.x + int64_t{i} * k, k, reinterpret_cast<int8_t*>(row));
    if (flip != 0) {
      for (int c = 0; c < k; ++c) row[c] ^= flip;
    }
  }
  TiledOperands b;
  b.p = &p;
  b.x = codes.data();
  b.ldx = ldx;
  b.x_row_bytes = ldx;
  b.x_scales = scales.data();
  return b;
}

TiledOperands PackInt4Activations(const LinearParams& p) {
  TiledOperands b = PackInt8Activations(p, (int64_t{p.w.cols} + 63) / 64 * 64, /*flip=*/0);
  const int64_t halves = b.ldx / 32;
  thread_local std::vector<int32_t> sums;
  sums.resize(p.m * halves);
  const int8_t* q = static_cast<const int8_t*>(b.x);
  for (int64_t e = 0; e < p.m * halves; ++e) {
    int32_t sum = 0;
    for (int c = 0; c < 32; ++c) sum += q[e * 32 + c];
    sums[e] = -8 * sum;
  }
  b.x_sums = sums.data();
  return b;
}

void StoreDots(const TiledOperands& b, int j0, int i0, int nw, int mx, const float* dots, int dots_stride) {
  const LinearParams& p = *b.p;
  const int n = p.w.rows;
  for (int i = 0; i < mx; ++i) {
    float* y = p.y + int64_t{i0 + i} * n;
    for (int r = 0; r < nw; ++r) {
      const int j = j0 + r;
      float v = dots[i * dots_stride + r];
      const float bias = p.bias != nullptr ? p.bias[j] : 0.0f;
      if (b.x_scales != nullptr) {
        // kInt8: s_x · s_w times the integer sum; kInt4's dots carry the group scales. One
        // fma with the bias, as the panel GEMMs' vector epilogue (which the compiler would
        // contract to one anyway: explicit in both, so every m gives the same bits).
        const float scale = p.w.scales != nullptr ? b.x_scales[i0 + i] * p.w.scales[j] : b.x_scales[i0 + i];
        v = std::fma(v, scale, bias);
      } else {
        v += bias;
      }
      y[j] = p.beta != 0.0f ? std::fma(p.beta, y[j], v) : v;
    }
  }
}

namespace {

// Computes p->y for all rows: tasks of whole tiles of rows_w rows of W (the last one cut at
// n) handed to the pool, each running tile(j0, i0, nw, mx, dots) for the nw rows of W from j0
// (nw < rows_w only at n) and mx rows of x from i0 (mx in [1, max_mx]), which writes
// dots[i * rows_w + r] for i < mx and r < nw (a tile may write rows up to rows_w: they are
// dropped), then StoreDots. REQUIRES: rows_w <= kMaxGridRowsW, max_mx <= kMaxTileRowsX.
void RunTileGrid(const TiledOperands& b, int rows_w, int max_mx,
                 absl::FunctionRef<void(int, int, int, int, float*)> tile) {
  const LinearParams& p = *b.p;
  const int n = p.w.rows;
  // One row of x (decode) streams W: tasks of at least kMinStreamTaskBytes of W (but two per
  // thread at least), so that each thread's stream runs long enough for the prefetchers.
  int rows_per_task = std::max(kRowsPerTask, rows_w);
  if (p.m == 1) {
    const int threads = p.pool != nullptr ? p.pool->num_threads() : 1;
    const int64_t want = kMinStreamTaskBytes / std::max<int64_t>(1, WeightRowBytes(p.w.format, p.w.cols));
    rows_per_task = static_cast<int>(std::max<int64_t>(rows_per_task, std::min<int64_t>(want, n / (2 * threads))));
  }
  rows_per_task = (rows_per_task + rows_w - 1) / rows_w * rows_w;
  const int num_tasks = (n + rows_per_task - 1) / rows_per_task;
  // Rows of x per pass over a task's W rows: ~kChunkBytes of packed x, which
  // then stays in L2 while every W tile of the task reuses it (without this,
  // each W tile would stream all of a large x through the caches).
  const int64_t x_row_bytes = std::max<int64_t>(1, b.x_row_bytes);
  const int chunk_rows = static_cast<int>(std::max<int64_t>(max_mx, kChunkBytes / x_row_bytes / max_mx * max_mx));
  auto run = [&](int64_t task) {
    const int j_begin = static_cast<int>(task) * rows_per_task;
    const int j_end = std::min(n, j_begin + rows_per_task);
    float dots[kMaxTileRowsX * kMaxGridRowsW];
    for (int chunk = 0; chunk < p.m; chunk += chunk_rows) {
      const int chunk_end = std::min(p.m, chunk + chunk_rows);
      for (int j0 = j_begin; j0 < j_end; j0 += rows_w) {
        const int nw = std::min(rows_w, j_end - j0);
        for (int i0 = chunk; i0 < chunk_end; i0 += max_mx) {
          const int mx = std::min(max_mx, chunk_end - i0);
          tile(j0, i0, nw, mx, dots);
          StoreDots(b, j0, i0, nw, mx, dots, rows_w);
        }
      }
    }
  };
  RunTasks(p.pool, num_tasks, run);
}

}  // namespace

void RunTiles(const TiledOperands& b, const TileFn (&tiles)[kMaxTileRowsW][kMaxTileRowsX], int max_mx) {
  RunTileGrid(b, kMaxTileRowsW, max_mx,
              [&](int j0, int i0, int nw, int mx, float* dots) { tiles[nw - 1][mx - 1](b, j0, i0, dots); });
}

void RunPanelTiles(const TiledOperands& b, int rows_w, const TileFn* tiles, int max_mx) {
  RunTileGrid(b, rows_w, max_mx, [&](int j0, int i0, int, int mx, float* dots) { tiles[mx - 1](b, j0, i0, dots); });
}

}  // namespace internal

void Linear(const LinearParams& p) { Linear(p, SelectedCpuIsa().isa); }

void Linear(const LinearParams& p, CpuIsa isa) {
  if (p.w.format == WeightFormat::kF32) {
    LinearF32(p);
  } else if (isa != CpuIsa::kAvx2) {
    internal::TiledLinearAvx512(p, isa);
  } else {
    internal::TiledLinearAvx2(p);
  }
}

void SetBlasThreads(int num_threads) { openblas_set_num_threads(num_threads); }

}  // namespace kvspan::kernels
