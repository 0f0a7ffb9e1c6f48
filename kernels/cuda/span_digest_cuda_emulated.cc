// span_digest_cuda.cu built for the CPU emulator (internal/cuda_compat.h): the same source, compiled by the
// host compiler, its launches emulated.
#include "kernels/cuda/span_digest_cuda.cu"
