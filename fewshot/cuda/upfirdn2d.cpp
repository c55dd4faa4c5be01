// upfirdn2d on the CPU: each output pixel sums only the taps that land on real input pixels
// (axis_taps in ops_common.h), so the zero-inserted, padded intermediate of the reference is
// never built. Rows of the output are spread over threads with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "ops_checks.h"

namespace fewshot {

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter) {
  TORCH_CHECK(x_in.device().is_cpu(), "upfirdn2d_cpu: expected a CPU tensor");
  const at::Tensor x = x_in.contiguous();
  const UpfirdnShape s = check_upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1);
  at::Tensor y = at::empty({x.size(0), x.size(1), s.out_h, s.out_w}, x.options());
  if (y.numel() == 0) return y;

  // Column taps are the same for every row: work them out once.
  std::vector<AxisTaps> col_taps(s.out_w);
  for (int64_t ox = 0; ox < s.out_w; ++ox) col_taps[ox] = axis_taps(ox, upx, downx, px0, s.in_w, s.taps_x);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const at::Tensor taps = correlation_taps(f, flip_filter, c10::CppTypeToScalarType<opmath_t>::value);
    const opmath_t* gp = taps.const_data_ptr<opmath_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const int64_t rows = s.batch_channels * s.out_h;
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / s.out_w);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t plane = row / s.out_h;
        const int64_t oy = row - plane * s.out_h;
        const AxisTaps ty = axis_taps(oy, upy, downy, py0, s.in_h, s.taps_y);
        const scalar_t* x_plane = xp + plane * s.in_h * s.in_w;
        scalar_t* y_row = yp + row * s.out_w;
        for (int64_t ox = 0; ox < s.out_w; ++ox) {
          const AxisTaps tx = col_taps[ox];
          opmath_t acc = 0;
          for (int64_t ky = 0; ky < ty.count; ++ky) {
            const opmath_t* g_row = gp + (ty.first_tap + ky * upy) * s.taps_x + tx.first_tap;
            const scalar_t* x_row = x_plane + (ty.first_input + ky) * s.in_w + tx.first_input;
            for (int64_t kx = 0; kx < tx.count; ++kx) acc += g_row[kx * upx] * opmath_t(x_row[kx]);
          }
          y_row[ox] = scalar_t(acc);
        }
      }
    });
  });
  return y;
}

}  // namespace fewshot
