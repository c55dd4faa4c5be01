// filtered_lrelu on CUDA: simple and correct rather than fast. Two grid-stride kernels per direction:
// the first computes the intermediate (stage 1 and 2) into a scratch tensor in the accumulation type,
// one thread per four neighbouring pixels so each writes (forward) or reads (backward) one whole
// byte of the 2-bit mask; the second applies stage 3, one thread per output pixel. Which taps meet
// which pixels comes from filtered_lrelu.h and axis_taps, the arithmetic the CPU kernel uses.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
// c10 headers only: ATen/cuda/CUDAContext.h drags in cuBLAS/cuSPARSE headers a minimal toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "filtered_lrelu.h"

namespace fewshot {

// Tap (j, i) of a stage: a 1-D filter is used on both axes (their product), a 2-D one row-major.
template <typename T>
__device__ __forceinline__ T tap2d(const T* g, int64_t width, bool separable, int64_t j, int64_t i) {
  return separable ? g[j] * g[i] : g[j * width + i];
}

template <typename scalar_t, bool BACKWARD>
__global__ void flrelu_mid_kernel(const scalar_t* __restrict__ in, const scalar_t* __restrict__ bias,
                                  const at::opmath_type<scalar_t>* __restrict__ taps, int64_t taps_width,
                                  bool separable, at::opmath_type<scalar_t>* __restrict__ mid,
                                  uint8_t* __restrict__ mask, AxisPlan ax, AxisPlan ay, int64_t planes,
                                  int64_t channels, double gain_d, double slope_d, double clamp_d) {
  using T = at::opmath_type<scalar_t>;
  const T gain = T(gain_d), slope = T(slope_d), clamp = T(clamp_d);
  const int64_t row_bytes = mask_row_bytes(ax.mid);
  const int64_t n = planes * ay.mid * row_bytes;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t quad = i % row_bytes;
    const int64_t r = (i / row_bytes) % ay.mid;
    const int64_t plane = i / (row_bytes * ay.mid);
    const T b = bias ? T(bias[plane % channels]) : T(0);
    const scalar_t* x = in + plane * ay.in * ax.in;
    const AxisTaps ty = axis_taps(r, ay.up, 1, ay.pad_up, ay.in, ay.taps_up);
    uint8_t byte = BACKWARD ? mask[i] : uint8_t(0);
    for (int64_t c = quad * 4; c < quad * 4 + 4 && c < ax.mid; ++c) {
      const AxisTaps tx = axis_taps(c, ax.up, 1, ax.pad_up, ax.in, ax.taps_up);
      T s = 0;
      for (int64_t ky = 0; ky < ty.count; ++ky) {
        const scalar_t* xr = x + (ty.first_input + ky) * ax.in + tx.first_input;
        for (int64_t kx = 0; kx < tx.count; ++kx)
          s += tap2d(taps, taps_width, separable, ty.first_tap + ay.up * ky, tx.first_tap + ax.up * kx) * (T(xr[kx]) + b);
      }
      T v;
      if constexpr (BACKWARD) {
        v = s * lrelu_derivative(uint8_t((byte >> mask_shift(c)) & 3), gain, slope);
      } else {
        uint8_t code;
        v = lrelu_forward(s, gain, slope, clamp, code);
        byte |= uint8_t(code << mask_shift(c));
      }
      mid[(plane * ay.mid + r) * ax.mid + c] = v;
    }
    if (!BACKWARD && mask != nullptr) mask[i] = byte;
  }
}

template <typename scalar_t>
__global__ void flrelu_out_kernel(const at::opmath_type<scalar_t>* __restrict__ mid,
                                  const at::opmath_type<scalar_t>* __restrict__ taps, int64_t taps_width,
                                  bool separable, scalar_t* __restrict__ out, AxisPlan ax, AxisPlan ay, int64_t planes) {
  using T = at::opmath_type<scalar_t>;
  const int64_t n = planes * ay.out * ax.out;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t ox = i % ax.out;
    const int64_t oy = (i / ax.out) % ay.out;
    const int64_t plane = i / (ax.out * ay.out);
    const AxisTaps ty = axis_taps(oy, 1, ay.down, ay.pad_down, ay.mid, ay.taps_down);
    const AxisTaps tx = axis_taps(ox, 1, ax.down, ax.pad_down, ax.mid, ax.taps_down);
    const T* m = mid + plane * ay.mid * ax.mid;
    T acc = 0;
    for (int64_t ky = 0; ky < ty.count; ++ky) {
      const T* mr = m + (ty.first_input + ky) * ax.mid + tx.first_input;
      for (int64_t kx = 0; kx < tx.count; ++kx)
        acc += tap2d(taps, taps_width, separable, ty.first_tap + ky, tx.first_tap + kx) * mr[kx];
    }
    out[i] = scalar_t(acc);
  }
}

namespace {

int64_t blocks_for(int64_t n, int threads) { return std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 16)); }

// Both kernels of one direction: in -> (stage 1, 2) -> scratch -> (stage 3) -> out.
template <bool BACKWARD>
void launch(const at::Tensor& in, const at::Tensor& b, const at::Tensor& taps1, const at::Tensor& taps3,
            at::Tensor& out, uint8_t* mask, const FlreluPlan& plan, double gain, double slope, double clamp) {
  const int threads = 256;
  const int64_t planes = plan.batch * plan.channels;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor mid = at::empty({planes, plan.y.mid, plan.x.mid}, in.options().dtype(taps1.scalar_type()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "filtered_lrelu_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* bp = b.defined() && b.numel() > 0 ? b.const_data_ptr<scalar_t>() : nullptr;
    const int64_t quads = planes * plan.y.mid * mask_row_bytes(plan.x.mid);
    flrelu_mid_kernel<scalar_t, BACKWARD><<<blocks_for(quads, threads), threads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), bp, taps1.const_data_ptr<T>(), taps1.size(-1), taps1.dim() == 1,
        mid.mutable_data_ptr<T>(), mask, plan.x, plan.y, planes, plan.channels, gain, slope, clamp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    flrelu_out_kernel<scalar_t><<<blocks_for(out.numel(), threads), threads, 0, stream>>>(
        mid.const_data_ptr<T>(), taps3.const_data_ptr<T>(), taps3.size(-1), taps3.dim() == 1,
        out.mutable_data_ptr<scalar_t>(), plan.x, plan.y, planes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::ScalarType opmath_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace

std::vector<at::Tensor> filtered_lrelu_cuda(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& fu,
                                            const at::Tensor& fd, int64_t up, int64_t down, int64_t px0, int64_t px1,
                                            int64_t py0, int64_t py1, double gain, double slope, double clamp,
                                            bool flip_filter, bool write_mask) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() == 4, "filtered_lrelu_cuda: expected a CUDA NCHW tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor b = b_in.defined() && b_in.numel() > 0 ? b_in.to(x.scalar_type()).contiguous() : at::Tensor();
  TORCH_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == x.size(1)), "filtered_lrelu: bias ", b_in.sizes(),
              " does not match the channels of ", x.sizes());
  const FlreluPlan plan = forward_plan(x.size(0), x.size(1), x.size(2), x.size(3), fu, fd, up, down, px0, px1, py0, py1);
  at::Tensor y = at::empty({plan.batch, plan.channels, plan.y.out, plan.x.out}, x.options());
  at::Tensor mask = write_mask ? at::zeros({plan.batch, plan.channels, plan.y.mid, mask_row_bytes(plan.x.mid)},
                                           x.options().dtype(at::kByte))
                               : at::Tensor();
  if (y.numel() == 0) return {y, mask};
  const at::ScalarType opmath = opmath_of(x.scalar_type());
  const at::Tensor taps1 = prepared_taps(fu, flip_filter, double(up), opmath, x.device());
  const at::Tensor taps3 = prepared_taps(fd, flip_filter, 1.0, opmath, x.device());
  launch<false>(x, b, taps1, taps3, y, write_mask ? mask.mutable_data_ptr<uint8_t>() : nullptr, plan, gain, slope, clamp);
  return {y, mask};
}

at::Tensor filtered_lrelu_grad_cuda(const at::Tensor& gy_in, const at::Tensor& mask_in, const at::Tensor& fu,
                                    const at::Tensor& fd, int64_t in_h, int64_t in_w, int64_t up, int64_t down,
                                    int64_t px0, int64_t px1, int64_t py0, int64_t py1, double gain, double slope,
                                    bool flip_filter) {
  TORCH_CHECK(gy_in.is_cuda() && gy_in.dim() == 4, "filtered_lrelu_grad_cuda: expected a CUDA NCHW tensor");
  const c10::cuda::CUDAGuard guard(gy_in.device());
  const at::Tensor gy = gy_in.contiguous();
  at::Tensor mask = mask_in.contiguous();
  const FlreluPlan fwd = forward_plan(gy.size(0), gy.size(1), in_h, in_w, fu, fd, up, down, px0, px1, py0, py1);
  check_gradient_args(gy, mask, fwd);
  const FlreluPlan plan{transposed_axis(fwd.x), transposed_axis(fwd.y), fwd.batch, fwd.channels};
  at::Tensor gx = at::empty({plan.batch, plan.channels, in_h, in_w}, gy.options());
  if (gx.numel() == 0) return gx;
  const at::ScalarType opmath = opmath_of(gy.scalar_type());
  const at::Tensor taps1 = prepared_taps(fd, !flip_filter, 1.0, opmath, gy.device());
  const at::Tensor taps3 = prepared_taps(fu, !flip_filter, double(up), opmath, gy.device());
  launch<true>(gy, at::Tensor(), taps1, taps3, gx, mask.data_ptr<uint8_t>(), plan, gain, slope, -1.0);
  return gx;
}

}  // namespace fewshot
