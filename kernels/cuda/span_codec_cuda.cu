#include "kernels/cuda/span_codec_cuda.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/internal/span_codec_kernels.cuh"

namespace kvspan::kernels {
namespace {

bool Quantized(SpanCodec codec) { return SpanCodecBits(codec) < 16; }

}  // namespace

int64_t SpanCodecRowBytes(SpanCodec codec, int head_dim) { return (int64_t{head_dim} * SpanCodecBits(codec) + 7) / 8; }

int64_t SpanCodecKeyParamCount(SpanCodec codec, int group_size, int num_entries, int head_dim) {
  if (!Quantized(codec)) return 0;
  return 2 * ((int64_t{num_entries} + group_size - 1) / group_size) * head_dim;
}

int64_t SpanCodecValueParamCount(SpanCodec codec, int group_size, int num_entries, int head_dim) {
  if (!Quantized(codec)) return 0;
  return 2 * int64_t{num_entries} * ((head_dim + group_size - 1) / group_size);
}

absl::Status EncodeSpanCuda(const SpanCodecCudaParams& p, void* stream) {
  const bool known = p.codec == SpanCodec::kBF16 || p.codec == SpanCodec::kFP16 || Quantized(p.codec);
  if (!known || p.num_layers < 1 || p.num_kv_heads < 1 || p.num_entries < 1 || p.head_dim < 1 ||
      p.head_dim > 1024 || p.token_stride < p.head_dim || (Quantized(p.codec) && (p.group_size < 1 || p.group_size > 65536)) ||
      p.keys == nullptr || p.values == nullptr || p.key_data == nullptr || p.value_data == nullptr ||
      (Quantized(p.codec) && (p.key_params == nullptr || p.value_params == nullptr))) {
    return absl::InvalidArgumentError("EncodeSpanCuda: shape out of range or null pointer");
  }
  if (CudaDeviceCount() == 0) return absl::UnavailableError("no CUDA device");
  DeviceBuffer error;
  RETURN_IF_ERROR(error.Reserve(sizeof(int)));
  const int zero = 0;
  RETURN_IF_ERROR(error.CopyFromHost(&zero, sizeof(int)));
  internal::SpanCodecArgs a;
  a.p = p;
  a.bits = SpanCodecBits(p.codec);
  a.row_bytes = SpanCodecRowBytes(p.codec, p.head_dim);
  a.key_param_count = SpanCodecKeyParamCount(p.codec, p.group_size, p.num_entries, p.head_dim);
  a.value_param_count = SpanCodecValueParamCount(p.codec, p.group_size, p.num_entries, p.head_dim);
  a.error = error.as<int>();
  if (Quantized(p.codec)) {
    // Params first: the codes read them (stream order).
    const internal::LaunchShape ks = internal::KeyParamsShape(a);
    KVSPAN_LAUNCH(internal::KeyParamsKernel, ks, stream, a);
    RETURN_IF_ERROR(internal::KvspanLaunchStatus("key params launch"));
    const internal::LaunchShape vs = internal::ValueParamsShape(a);
    KVSPAN_LAUNCH(internal::ValueParamsKernel, vs, stream, a);
    RETURN_IF_ERROR(internal::KvspanLaunchStatus("value params launch"));
  }
  const internal::LaunchShape cs = internal::CodesShape(a);
  KVSPAN_LAUNCH(internal::CodesKernel, cs, stream, a);
  RETURN_IF_ERROR(internal::KvspanLaunchStatus("codes launch"));
  RETURN_IF_ERROR(CudaSynchronize());
  int flag = 0;
  RETURN_IF_ERROR(error.CopyToHost(&flag, sizeof(int)));
  if (flag != 0) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeSpanCuda: a key or value is not finite",
                                                   SpanCodecBits(p.codec) == 16 && p.codec == SpanCodec::kBF16
                                                       ? ""
                                                       : " or beyond fp16's range (|x| > 65504)"));
  }
  return absl::OkStatus();
}

}  // namespace kvspan::kernels
