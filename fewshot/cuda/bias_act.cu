// bias_act on CUDA: one thread per element (grid-stride), the element math from ops_common.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10 headers only: ATen/cuda/CUDAContext.h drags in cuBLAS/cuSPARSE headers a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "ops_checks.h"

namespace fewshot {

template <typename scalar_t, int ACT, int ORDER>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ t, scalar_t* __restrict__ y, int64_t n, int64_t inner,
                                int64_t channels, double alpha, double gain, double clamp) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t a = opmath_t(alpha), g = opmath_t(gain), c = opmath_t(clamp);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const opmath_t bias = b ? opmath_t(b[bias_channel(i, inner, channels)]) : opmath_t(0);
    const opmath_t grad = ORDER > 0 ? opmath_t(t[i]) : opmath_t(0);
    y[i] = c >= opmath_t(0) ? scalar_t(bias_act_element<ACT, ORDER, true, opmath_t>(opmath_t(x[i]), bias, grad, a, g, c))
                            : scalar_t(bias_act_element<ACT, ORDER, false, opmath_t>(opmath_t(x[i]), bias, grad, a, g, c));
  }
}

at::Tensor bias_act_cuda(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& t_in, int64_t dim,
                         int64_t act, int64_t order, double alpha, double gain, double clamp) {
  TORCH_CHECK(x_in.is_cuda(), "bias_act_cuda: expected a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  const at::Tensor t = order > 0 ? t_in.contiguous() : t_in;
  const BiasActShape shape = check_bias_act(x, b, t, dim, act, order);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (shape.numel == 0) return y;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((shape.numel + threads - 1) / threads, int64_t(1) << 16);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    const scalar_t* bp = shape.has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* tp = order > 0 ? t.const_data_ptr<scalar_t>() : nullptr;
    with_act(act, order, [&](auto act_tag, auto order_tag) {
      constexpr int ACT = decltype(act_tag)::value;
      constexpr int ORDER = decltype(order_tag)::value;
      bias_act_kernel<scalar_t, ACT, ORDER><<<blocks, threads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), bp, tp, y.mutable_data_ptr<scalar_t>(), shape.numel, shape.inner,
          shape.channels, alpha, gain, clamp);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace fewshot
