// kernels::Linear: the dispatch of gemm.h (fp32 through OpenBLAS, small batches of other
// formats through gemm_small_*.cc, larger ones by block conversion + sgemm).
#include "kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm_small.h"

namespace kvspan::kernels {
namespace {

// Rows of W per ParallelFor task in the small-batch kernels: enough work per task to
// amortize the task hand-out, small enough to balance 2..16 threads on a 2048-row matrix.
constexpr int kRowsPerTask = 64;
// fp32 bytes of one converted block of W in the large-batch path: it stays in L2/L3
// between the conversion and sgemm, and is wide enough (>= 64 rows at k = 8192) that
// sgemm's packing of x per block costs little.
constexpr int64_t kBlockBytes = int64_t{2} << 20;

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
    // GEMV: y[n] = W[n, k] · x[k]. OpenBLAS' sgemm with m == 1 is slower than sgemv.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, p.x, 1, p.beta, p.y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, n, k, 1.0f, p.x, k, w, k, p.beta, p.y, n);
  }
  AddBias(p);
}

// Large m: W converted to fp32 one block of rows at a time (over the pool), then sgemm.
// kInt8 multiplies the integer codes of x and W as floats and scales afterwards.
void LinearBlocked(const LinearParams& p) {
  const int n = p.w.rows, k = p.w.cols;
  const bool int8 = p.w.format == WeightFormat::kInt8;
  const int block_rows = static_cast<int>(std::min<int64_t>(n, std::max<int64_t>(16, kBlockBytes / (int64_t{k} * 4))));
  // NOTE: the pool's threads reach these through block_data etc.: a thread_local named
  // inside the lambda would be the running thread's own.
  thread_local std::vector<float> block, x_codes, x_scales, partial;
  block.resize(int64_t{block_rows} * k);
  float* const block_data = block.data();
  const float* x = p.x;
  if (int8) {
    x_codes.resize(int64_t{p.m} * k);
    x_scales.resize(p.m);
    std::vector<int8_t> q(k);
    for (int i = 0; i < p.m; ++i) {
      x_scales[i] = QuantizeRowInt8(p.x + int64_t{i} * k, k, q.data());
      std::copy(q.begin(), q.end(), x_codes.begin() + int64_t{i} * k);
    }
    x = x_codes.data();
    partial.resize(int64_t{p.m} * block_rows);
  }
  const int8_t* codes = static_cast<const int8_t*>(p.w.data);
  for (int j0 = 0; j0 < n; j0 += block_rows) {
    const int nb = std::min(block_rows, n - j0);
    auto convert = [&](int64_t r) {
      float* dst = block_data + r * k;
      if (int8) {
        const int8_t* src = codes + (j0 + r) * k;
        for (int c = 0; c < k; ++c) dst[c] = src[c];
      } else {
        DequantizeRow(p.w, j0 + static_cast<int>(r), dst);
      }
    };
    if (p.pool != nullptr) {
      p.pool->ParallelFor(nb, convert, 8);
    } else {
      for (int r = 0; r < nb; ++r) convert(r);
    }
    if (!int8) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, nb, k, 1.0f, x, k, block_data, k, p.beta,
                  p.y + j0, n);
      continue;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.m, nb, k, 1.0f, x, k, block_data, k, 0.0f,
                partial.data(), nb);
    for (int i = 0; i < p.m; ++i) {
      float* y = p.y + int64_t{i} * n + j0;
      const float* dots = partial.data() + int64_t{i} * nb;
      for (int r = 0; r < nb; ++r) {
        const float v = dots[r] * (x_scales[i] * p.w.scales[j0 + r]);
        y[r] = p.beta != 0.0f ? v + p.beta * y[r] : v;
      }
    }
  }
  AddBias(p);
}

}  // namespace

namespace internal {

void RunSmallBatch(const SmallBatch& b, const TileFn (&tiles)[kMaxTileRowsW][kMaxTileRowsX], int max_mx) {
  const LinearParams& p = *b.p;
  const int n = p.w.rows;
  const int num_tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  auto run = [&](int64_t task) {
    const int j_end = std::min(n, static_cast<int>(task + 1) * kRowsPerTask);
    float dots[kMaxTileRowsX * kMaxTileRowsW];
    for (int j0 = static_cast<int>(task) * kRowsPerTask; j0 < j_end; j0 += kMaxTileRowsW) {
      const int nw = std::min(kMaxTileRowsW, j_end - j0);
      for (int i0 = 0; i0 < p.m; i0 += max_mx) {
        const int mx = std::min(max_mx, p.m - i0);
        tiles[nw - 1][mx - 1](b, j0, i0, dots);
        for (int i = 0; i < mx; ++i) {
          float* y = p.y + int64_t{i0 + i} * n;
          for (int r = 0; r < nw; ++r) {
            const int j = j0 + r;
            float v = dots[i * kMaxTileRowsW + r];
            if (b.x_scales != nullptr) v *= b.x_scales[i0 + i] * p.w.scales[j];
            if (p.bias != nullptr) v += p.bias[j];
            y[j] = p.beta != 0.0f ? v + p.beta * y[j] : v;
          }
        }
      }
    }
  };
  if (p.pool != nullptr) {
    p.pool->ParallelFor(num_tasks, run);
  } else {
    for (int t = 0; t < num_tasks; ++t) run(t);
  }
}

}  // namespace internal

void Linear(const LinearParams& p) { Linear(p, SelectedCpuIsa().isa); }

void Linear(const LinearParams& p, CpuIsa isa) {
  if (p.w.format == WeightFormat::kF32) {
    LinearF32(p);
  } else if (p.m > kSmallBatchRows) {
    LinearBlocked(p);
  } else if (isa != CpuIsa::kAvx2) {
    internal::SmallBatchLinearAvx512(p, /*bf16_dot=*/isa == CpuIsa::kAvx512Bf16Dot);
  } else {
    internal::SmallBatchLinearAvx2(p);
  }
}

void SetBlasThreads(int num_threads) { openblas_set_num_threads(num_threads); }

}  // namespace kvspan::kernels
