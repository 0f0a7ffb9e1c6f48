// linear_cuda.cu built for the CPU emulator (internal/cuda_compat.h): the same source,
// compiled by the host compiler, its launches emulated (cuBLASLt: Unimplemented).
#include "kernels/cuda/linear_cuda.cu"
