// Math shared by the CPU (.cpp) and CUDA (.cu) kernels of bias_act and upfirdn2d.
//
// Everything that decides *what* a kernel computes lives here: the activation functions and
// their derivatives, the bias channel of a flat index, and which filter taps and input pixels
// feed one output pixel of upfirdn2d. The .cpp and .cu files only decide *how* to loop, so the
// CPU tests exercise the same arithmetic the GPU runs. The meaning itself is defined by the
// plain-PyTorch references bias_act_ref.py and upfirdn2d_ref.py.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace fewshot {

// Activation codes: must match Activation.code in bias_act_ref.py.
enum ActCode : int {
  kLinear = 1,
  kRelu = 2,
  kLrelu = 3,
  kTanh = 4,
  kSigmoid = 5,
  kElu = 6,
  kSelu = 7,
  kSoftplus = 8,
  kSwish = 9,
};

// Overloads that resolve to the single- or double-precision libm call on host and device alike.
FS_HD float fs_exp(float v) { return expf(v); }
FS_HD double fs_exp(double v) { return exp(v); }
FS_HD float fs_expm1(float v) { return expm1f(v); }
FS_HD double fs_expm1(double v) { return expm1(v); }
FS_HD float fs_log1p(float v) { return log1pf(v); }
FS_HD double fs_log1p(double v) { return log1p(v); }
FS_HD float fs_tanh(float v) { return tanhf(v); }
FS_HD double fs_tanh(double v) { return tanh(v); }

template <typename T>
FS_HD T fs_sigmoid(T v) {
  return T(1) / (T(1) + fs_exp(-v));
}

// The ORDER-th derivative of activation ACT at pre-activation s (order 0 = the activation).
// Conventions at kinks and thresholds follow torch's own kernels, which the reference uses:
// relu' is 0 at 0, lrelu' is alpha at 0, softplus is the identity above 20 (beta 1, threshold 20),
// elu and selu use torch's fixed constants (the reference ignores alpha for them).
template <int ACT, int ORDER, typename T>
FS_HD T act_derivative(T s, T alpha) {
  constexpr double kSeluScale = 1.0507009873554804934193349852946;
  constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
  if constexpr (ACT == kLinear) {
    return ORDER == 0 ? s : (ORDER == 1 ? T(1) : T(0));
  } else if constexpr (ACT == kRelu) {
    if constexpr (ORDER == 0) return s > T(0) ? s : T(0);
    if constexpr (ORDER == 1) return s > T(0) ? T(1) : T(0);
    return T(0);
  } else if constexpr (ACT == kLrelu) {
    if constexpr (ORDER == 0) return s > T(0) ? s : s * alpha;
    if constexpr (ORDER == 1) return s > T(0) ? T(1) : alpha;
    return T(0);
  } else if constexpr (ACT == kTanh) {
    T a = fs_tanh(s);
    if constexpr (ORDER == 0) return a;
    if constexpr (ORDER == 1) return T(1) - a * a;
    return T(-2) * a * (T(1) - a * a);
  } else if constexpr (ACT == kSigmoid) {
    T a = fs_sigmoid(s);
    if constexpr (ORDER == 0) return a;
    if constexpr (ORDER == 1) return a * (T(1) - a);
    return a * (T(1) - a) * (T(1) - T(2) * a);
  } else if constexpr (ACT == kElu) {
    if constexpr (ORDER == 0) return s > T(0) ? s : fs_expm1(s);
    if constexpr (ORDER == 1) return s > T(0) ? T(1) : fs_exp(s);
    return s > T(0) ? T(0) : fs_exp(s);
  } else if constexpr (ACT == kSelu) {
    const T scale = T(kSeluScale), sa = T(kSeluScale * kSeluAlpha);
    if constexpr (ORDER == 0) return s > T(0) ? scale * s : sa * fs_expm1(s);
    if constexpr (ORDER == 1) return s > T(0) ? scale : sa * fs_exp(s);
    return s > T(0) ? T(0) : sa * fs_exp(s);
  } else if constexpr (ACT == kSoftplus) {
    const bool linear = s > T(20);
    if constexpr (ORDER == 0) return linear ? s : fs_log1p(fs_exp(s));
    T a = fs_sigmoid(s);
    if constexpr (ORDER == 1) return linear ? T(1) : a;
    return linear ? T(0) : a * (T(1) - a);
  } else {  // kSwish: s * sigmoid(s)
    T a = fs_sigmoid(s);
    if constexpr (ORDER == 0) return s * a;
    if constexpr (ORDER == 1) return a * (T(1) + s * (T(1) - a));
    return a * (T(1) - a) * (T(2) + s * (T(1) - T(2) * a));
  }
}

// One element of bias_act. ORDER 0: clamp(act(x + b) * gain). ORDER k >= 1: the k-th derivative
// with respect to x, times t (the incoming gradient); zero where the forward value was clamped
// (torch's clamp passes the gradient where -clamp <= value <= clamp, bounds included).
// CLAMP is false for "no clamp" (clamp < 0 in the Python API); written with selects only, no
// branches, so CPU loops over it vectorize.
template <int ACT, int ORDER, bool CLAMP, typename T>
FS_HD T bias_act_element(T x, T b, T t, T alpha, T gain, T clamp) {
  const T s = x + b;
  if constexpr (ORDER == 0) {
    T y = act_derivative<ACT, 0>(s, alpha) * gain;
    if constexpr (CLAMP) {
      y = y < -clamp ? -clamp : y;
      y = y > clamp ? clamp : y;
    }
    return y;
  } else {
    T d = t * gain * act_derivative<ACT, ORDER>(s, alpha);
    if constexpr (CLAMP) {
      const T y = act_derivative<ACT, 0>(s, alpha) * gain;
      const bool inside = (y >= -clamp) & (y <= clamp);
      d = inside ? d : T(0);
    }
    return d;
  }
}

// The bias channel of flat index i of a contiguous tensor whose bias dimension has `channels`
// entries and `inner` elements after it.
FS_HD int64_t bias_channel(int64_t i, int64_t inner, int64_t channels) {
  return (i / inner) % channels;
}

// upfirdn2d along one axis. Output pixel o reads the zero-upsampled, padded input at positions
// o * down + j for taps j = 0 .. taps-1 (a correlation; the caller flips the filter for a true
// convolution). Only positions u = o * down + j - pad that are multiples of `up` and inside
// [0, in_size * up) hold input pixels: those are taps first_tap, first_tap + up, ... (count of
// them) reading input pixels first_input, first_input + 1, ...
struct AxisTaps {
  int64_t first_tap;
  int64_t first_input;
  int64_t count;
};

FS_HD int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

FS_HD AxisTaps axis_taps(int64_t o, int64_t up, int64_t down, int64_t pad, int64_t in_size, int64_t taps) {
  const int64_t origin = o * down - pad;  // upsampled position read by tap 0
  int64_t first = origin < 0 ? -origin : 0;
  const int64_t phase = (origin + first) - floor_div(origin + first, up) * up;
  if (phase != 0) first += up - phase;
  const int64_t end = (in_size * up - origin) < taps ? (in_size * up - origin) : taps;
  AxisTaps result;
  result.first_tap = first;
  result.first_input = first < end ? (origin + first) / up : 0;
  result.count = first < end ? (end - first + up - 1) / up : 0;
  return result;
}

// Output size of upfirdn2d along one axis (the reference's conv + stride arithmetic).
FS_HD int64_t upfirdn_out_size(int64_t in_size, int64_t up, int64_t down, int64_t pad0, int64_t pad1,
                               int64_t taps) {
  return floor_div(in_size * up + pad0 + pad1 - taps, down) + 1;
}

}  // namespace fewshot

// ---- host-side helpers (CPU kernels and CUDA launchers) -------------------------------------
#include <type_traits>
#include <utility>

namespace fewshot {

constexpr int kMaxOrder = 2;  // bias_act derivatives implemented in closed form

// Calls f(integral_constant<ACT>, integral_constant<ORDER>) so the element loop is compiled
// once per activation and order, with no branch on either inside it.
template <int ACT, typename F>
bool with_order(int64_t order, F&& f) {
  switch (order) {
    case 0: f(std::integral_constant<int, ACT>{}, std::integral_constant<int, 0>{}); return true;
    case 1: f(std::integral_constant<int, ACT>{}, std::integral_constant<int, 1>{}); return true;
    case 2: f(std::integral_constant<int, ACT>{}, std::integral_constant<int, 2>{}); return true;
    default: return false;
  }
}

template <typename F>
bool with_act(int64_t act, int64_t order, F&& f) {
  switch (act) {
    case kLinear: return with_order<kLinear>(order, f);
    case kRelu: return with_order<kRelu>(order, f);
    case kLrelu: return with_order<kLrelu>(order, f);
    case kTanh: return with_order<kTanh>(order, f);
    case kSigmoid: return with_order<kSigmoid>(order, f);
    case kElu: return with_order<kElu>(order, f);
    case kSelu: return with_order<kSelu>(order, f);
    case kSoftplus: return with_order<kSoftplus>(order, f);
    case kSwish: return with_order<kSwish>(order, f);
    default: return false;
  }
}

}  // namespace fewshot
