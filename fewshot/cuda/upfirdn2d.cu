// upfirdn2d on CUDA: one thread per output pixel (grid-stride); the taps that land on real input
// pixels come from axis_taps in ops_common.h, the same arithmetic the CPU kernel uses.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10 headers only: ATen/cuda/CUDAContext.h drags in cuBLAS/cuSPARSE headers a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "ops_checks.h"

namespace fewshot {

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ taps,
                                 scalar_t* __restrict__ y, UpfirdnShape s, int64_t upx, int64_t upy, int64_t downx,
                                 int64_t downy, int64_t px0, int64_t py0) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t n = s.batch_channels * s.out_h * s.out_w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t ox = i % s.out_w;
    const int64_t oy = (i / s.out_w) % s.out_h;
    const int64_t plane = i / (s.out_w * s.out_h);
    const AxisTaps ty = axis_taps(oy, upy, downy, py0, s.in_h, s.taps_y);
    const AxisTaps tx = axis_taps(ox, upx, downx, px0, s.in_w, s.taps_x);
    const scalar_t* x_plane = x + plane * s.in_h * s.in_w;
    opmath_t acc = 0;
    for (int64_t ky = 0; ky < ty.count; ++ky) {
      const opmath_t* g_row = taps + (ty.first_tap + ky * upy) * s.taps_x + tx.first_tap;
      const scalar_t* x_row = x_plane + (ty.first_input + ky) * s.in_w + tx.first_input;
      for (int64_t kx = 0; kx < tx.count; ++kx) acc += g_row[kx * upx] * opmath_t(x_row[kx]);
    }
    y[i] = scalar_t(acc);
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter) {
  TORCH_CHECK(x_in.is_cuda(), "upfirdn2d_cuda: expected a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const UpfirdnShape s = check_upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1);
  at::Tensor y = at::empty({x.size(0), x.size(1), s.out_h, s.out_w}, x.options());
  if (y.numel() == 0) return y;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((y.numel() + threads - 1) / threads, int64_t(1) << 16);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const at::Tensor taps = correlation_taps(f, flip_filter, c10::CppTypeToScalarType<opmath_t>::value);
    upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.const_data_ptr<scalar_t>(),
                                                                taps.const_data_ptr<opmath_t>(),
                                                                y.mutable_data_ptr<scalar_t>(), s, upx, upy, downx,
                                                                downy, px0, py0);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace fewshot
