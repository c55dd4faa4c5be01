// bias_act on the CPU: one pass over contiguous memory, at::parallel_for over flat ranges.
// Inside a range, runs of `inner` elements share one bias value, so the innermost loop is a
// plain elementwise loop the compiler can vectorize (the activation is a compile-time choice).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ops_checks.h"

namespace fewshot {

// A fresh contiguous output like x. A large CPU tensor is a fresh mapping whose first write
// page-faults every 4 KiB page, which costs more than the elementwise pass itself; asking for
// transparent huge pages on its 2 MiB-aligned interior cuts the faults 512-fold. madvise is only a
// hint (ignored where THP is off, errors ignored) and the whole output is written, so the resident
// memory is the same.
inline at::Tensor empty_output(const at::Tensor& x) {
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t bytes = static_cast<uintptr_t>(y.nbytes());
  if (bytes >= 4 * kHuge) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(y.data_ptr());
    const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (p + bytes) & ~(kHuge - 1);
    if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return y;
}

// One run of elements sharing a bias value; restrict pointers and no branches so it vectorizes.
template <int ACT, int ORDER, bool CLAMP, typename scalar_t, typename opmath_t>
void elementwise(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t, scalar_t* __restrict__ y, int64_t n,
                 opmath_t bias, opmath_t alpha, opmath_t gain, opmath_t clamp) {
  if constexpr (ORDER == 0) {
    for (int64_t k = 0; k < n; ++k)
      y[k] = scalar_t(bias_act_element<ACT, 0, CLAMP, opmath_t>(opmath_t(x[k]), bias, opmath_t(0), alpha, gain, clamp));
  } else {
    for (int64_t k = 0; k < n; ++k)
      y[k] = scalar_t(bias_act_element<ACT, ORDER, CLAMP, opmath_t>(opmath_t(x[k]), bias, opmath_t(t[k]), alpha, gain,
                                                                     clamp));
  }
}

at::Tensor bias_act_cpu(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& t_in, int64_t dim,
                        int64_t act, int64_t order, double alpha, double gain, double clamp) {
  TORCH_CHECK(x_in.device().is_cpu(), "bias_act_cpu: expected a CPU tensor");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  const at::Tensor t = order > 0 ? t_in.contiguous() : t_in;
  const BiasActShape shape = check_bias_act(x, b, t, dim, act, order);
  at::Tensor y = empty_output(x);
  if (shape.numel == 0) return y;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = shape.has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* tp = order > 0 ? t.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const opmath_t a = opmath_t(alpha), g = opmath_t(gain), c = opmath_t(clamp);
    with_act(act, order, [&](auto act_tag, auto order_tag) {
      constexpr int ACT = decltype(act_tag)::value;
      constexpr int ORDER = decltype(order_tag)::value;
      at::parallel_for(0, shape.numel, 1 << 15, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end;) {
          const int64_t run_end = std::min(end, (i / shape.inner + 1) * shape.inner);
          const opmath_t bias = bp ? opmath_t(bp[bias_channel(i, shape.inner, shape.channels)]) : opmath_t(0);
          if (c >= opmath_t(0)) {
            elementwise<ACT, ORDER, true>(xp + i, tp ? tp + i : nullptr, yp + i, run_end - i, bias, a, g, c);
          } else {
            elementwise<ACT, ORDER, false>(xp + i, tp ? tp + i : nullptr, yp + i, run_end - i, bias, a, g, c);
          }
          i = run_end;
        }
      });
    });
  });
  return y;
}

}  // namespace fewshot
