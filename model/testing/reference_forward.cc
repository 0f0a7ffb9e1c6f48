#include "model/testing/reference_forward.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/config.h"
#include "common/file_util.h"
#include "model/safetensors.h"

namespace kvspan::model::testing {
namespace {

using Matrix = std::vector<double>;  // row-major

class Tensors {
 public:
  explicit Tensors(const SafetensorsCheckpoint& ckpt) : ckpt_(ckpt) {}
  absl::StatusOr<Matrix> Get(const std::string& name) const {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt_.Get(name));
    std::vector<float> f(t->num_elements());
    RETURN_IF_ERROR(ConvertToFloat(*t, absl::MakeSpan(f)));
    return Matrix(f.begin(), f.end());
  }

 private:
  const SafetensorsCheckpoint& ckpt_;
};

// y[n, out] = x[n, in] · W[out, in]ᵀ (+ b)
Matrix Linear(const Matrix& x, int n, int in, const Matrix& w, int out, const Matrix* b = nullptr) {
  Matrix y(static_cast<size_t>(n) * out, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int o = 0; o < out; ++o) {
      double s = b != nullptr ? (*b)[o] : 0.0;
      for (int k = 0; k < in; ++k) s += x[static_cast<size_t>(i) * in + k] * w[static_cast<size_t>(o) * in + k];
      y[static_cast<size_t>(i) * out + o] = s;
    }
  }
  return y;
}

Matrix RmsNorm(const Matrix& x, int n, int dim, const Matrix& w, double eps) {
  Matrix y(x.size());
  for (int i = 0; i < n; ++i) {
    double ss = 0.0;
    for (int k = 0; k < dim; ++k) ss += x[i * dim + k] * x[i * dim + k];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int k = 0; k < dim; ++k) y[i * dim + k] = w[k] * x[i * dim + k] * inv;
  }
  return y;
}

// transformers' default and llama3 inv_freq, in double.
std::vector<double> InvFreq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (c.rope_scaling.type != RopeScaling::Type::kLlama3) return f;
  const RopeScaling& r = c.rope_scaling;
  const double low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
  const double high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const double wavelen = 2 * M_PI / f[i];
    if (wavelen > low_wavelen) {
      f[i] = f[i] / r.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
      f[i] = (1 - smooth) * f[i] / r.factor + smooth * f[i];
    }
  }
  return f;
}

// q * cos + rotate_half(q) * sin, per head, cos = cat(freqs, freqs).
void Rope(Matrix& x, int n, int heads, int hd, const std::vector<double>& inv_freq,
          absl::Span<const int32_t> positions) {
  const int half = hd / 2;
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < heads; ++h) {
      double* v = &x[(static_cast<size_t>(t) * heads + h) * hd];
      std::vector<double> rotated(hd);
      for (int i = 0; i < hd; ++i) rotated[i] = i < half ? -v[i + half] : v[i - half];
      for (int i = 0; i < hd; ++i) {
        const double angle = static_cast<double>(positions[t]) * inv_freq[i % half];
        v[i] = v[i] * std::cos(angle) + rotated[i] * std::sin(angle);
      }
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<double>> ReferenceForward(const std::string& dir, absl::Span<const int32_t> tokens) {
  std::vector<int32_t> positions(tokens.size());
  for (size_t t = 0; t < positions.size(); ++t) positions[t] = static_cast<int32_t>(t);
  return ReferenceForward(dir, tokens, positions, [](int i, int j) { return j <= i; });
}

absl::StatusOr<std::vector<double>> ReferenceForward(const std::string& dir, absl::Span<const int32_t> tokens,
                                                     absl::Span<const int32_t> positions,
                                                     const std::function<bool(int, int)>& visible) {
  if (positions.size() != tokens.size()) return absl::InvalidArgumentError("positions: wrong count");
  ASSIGN_OR_RETURN(std::string config_json, ReadFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(config_json));
  ASSIGN_OR_RETURN(auto ckpt, SafetensorsCheckpoint::OpenDir(dir));
  Tensors w(*ckpt);
  const int n = static_cast<int>(tokens.size()), h = c.hidden_size, hd = c.head_dim;
  const int nh = c.num_heads, nkv = c.num_kv_heads, inter = c.intermediate_size;
  const std::vector<double> inv_freq = InvFreq(c);

  ASSIGN_OR_RETURN(Matrix embed, w.Get("model.embed_tokens.weight"));
  Matrix x(static_cast<size_t>(n) * h);
  for (int t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size) return absl::InvalidArgumentError("token out of range");
    for (int k = 0; k < h; ++k) x[t * h + k] = embed[static_cast<size_t>(tokens[t]) * h + k];
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    ASSIGN_OR_RETURN(Matrix ln1, w.Get(p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(Matrix wq, w.Get(p + "self_attn.q_proj.weight"));
    ASSIGN_OR_RETURN(Matrix wk, w.Get(p + "self_attn.k_proj.weight"));
    ASSIGN_OR_RETURN(Matrix wv, w.Get(p + "self_attn.v_proj.weight"));
    ASSIGN_OR_RETURN(Matrix wo, w.Get(p + "self_attn.o_proj.weight"));
    Matrix bq, bk, bv;
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(bq, w.Get(p + "self_attn.q_proj.bias"));
      ASSIGN_OR_RETURN(bk, w.Get(p + "self_attn.k_proj.bias"));
      ASSIGN_OR_RETURN(bv, w.Get(p + "self_attn.v_proj.bias"));
    }
    const Matrix xn = RmsNorm(x, n, h, ln1, c.rms_norm_eps);
    Matrix q = Linear(xn, n, h, wq, nh * hd, c.qkv_bias ? &bq : nullptr);
    Matrix k = Linear(xn, n, h, wk, nkv * hd, c.qkv_bias ? &bk : nullptr);
    const Matrix v = Linear(xn, n, h, wv, nkv * hd, c.qkv_bias ? &bv : nullptr);
    Rope(q, n, nh, hd, inv_freq, positions);
    Rope(k, n, nkv, hd, inv_freq, positions);
    // Eager attention: scores, causal (and sliding-window) mask, softmax, weighted sum.
    Matrix attn(static_cast<size_t>(n) * nh * hd, 0.0);
    for (int head = 0; head < nh; ++head) {
      const int g = head / (nh / nkv);
      for (int i = 0; i < n; ++i) {
        std::vector<double> s(n, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          if (!visible(i, j)) continue;
          if (c.sliding_window > 0 && i - j >= c.sliding_window) continue;
          double d = 0.0;
          for (int e = 0; e < hd; ++e) d += q[(i * nh + head) * hd + e] * k[(j * nkv + g) * hd + e];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= i; ++j) sum += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
        for (int j = 0; j <= i; ++j) {
          if (s[j] == -INFINITY) continue;
          const double pj = std::exp(s[j] - mx) / sum;
          for (int e = 0; e < hd; ++e) attn[(i * nh + head) * hd + e] += pj * v[(j * nkv + g) * hd + e];
        }
      }
    }
    const Matrix o = Linear(attn, n, nh * hd, wo, h);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];

    ASSIGN_OR_RETURN(Matrix ln2, w.Get(p + "post_attention_layernorm.weight"));
    ASSIGN_OR_RETURN(Matrix wg, w.Get(p + "mlp.gate_proj.weight"));
    ASSIGN_OR_RETURN(Matrix wu, w.Get(p + "mlp.up_proj.weight"));
    ASSIGN_OR_RETURN(Matrix wd, w.Get(p + "mlp.down_proj.weight"));
    const Matrix xn2 = RmsNorm(x, n, h, ln2, c.rms_norm_eps);
    Matrix gate = Linear(xn2, n, h, wg, inter);
    const Matrix up = Linear(xn2, n, h, wu, inter);
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    const Matrix down = Linear(gate, n, inter, wd, h);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  ASSIGN_OR_RETURN(Matrix norm, w.Get("model.norm.weight"));
  ASSIGN_OR_RETURN(Matrix head, w.Get(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  const Matrix xf = RmsNorm(x, n, h, norm, c.rms_norm_eps);
  return Linear(xf, n, h, head, c.vocab_size);
}

}  // namespace kvspan::model::testing
