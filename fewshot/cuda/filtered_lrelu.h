// Index arithmetic and element math of filtered_lrelu, shared by the CPU (.cpp) and CUDA (.cu) kernels.
//
// The op (defined by filtered_lrelu_ref.py) runs three stages on every (n, c) plane:
//   1. zero-insert the input by `up`, pad it, correlate with the upsampling taps  -> the intermediate s,
//   2. leaky ReLU, gain, clamp                                                     -> a,
//   3. pad, correlate with the downsampling taps, keep every `down`-th pixel      -> y.
// Its input gradient has the same three stages with the roles swapped (stage 1 is the transpose of
// stage 3, stage 2 multiplies by the saved derivative, stage 3 is the transpose of stage 1), so one
// description, an AxisPlan per axis, serves both directions. Taps are correlation taps: the kernels
// never flip; the host prepares them (flipped for a true convolution, reversed again for a transpose).
#pragma once

#include <cstdint>
#include <utility>

#include "ops_common.h"

namespace fewshot {

// One axis of one direction of the op.
struct AxisPlan {
  int64_t in, mid, out;               // sizes: input, intermediate (stage 1's output), output
  int64_t up, pad_up, taps_up;        // stage 1: zero-insert by `up`, pad `pad_up` in front, taps_up taps
  int64_t down, pad_down, taps_down;  // stage 3: pad `pad_down` in front, taps_down taps, stride `down`
};

// The forward axis. The output size is the reference's; the intermediate is kept only as long as
// stage 3 reads it, (out - 1) * down + taps_d pixels, so the trailing padding pad1 (and whatever of
// the upsampled image lies past that) never needs computing: stage 1 ends there instead.
FS_HD AxisPlan forward_axis(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps_u,
                            int64_t taps_d) {
  AxisPlan a;
  a.in = in;
  a.out = floor_div(in * up + pad0 + pad1 - (taps_u - 1) - (taps_d - 1) + (down - 1), down);
  a.mid = (a.out - 1) * down + taps_d;
  a.up = up;
  a.pad_up = pad0;
  a.taps_up = taps_u;
  a.down = down;
  a.pad_down = 0;
  a.taps_down = taps_d;
  return a;
}

// The axis of the input gradient: stage 1 is the transpose of the forward's stage 3 (zero-insert by
// `down`, reversed taps, padding taps_d - 1), stage 3 the transpose of its stage 1 (stride `up`,
// reversed taps, padding taps_u - pad0 - 1). The intermediate is the forward's, pixel for pixel.
FS_HD AxisPlan transposed_axis(const AxisPlan& f) {
  AxisPlan t;
  t.in = f.out;
  t.mid = f.mid;
  t.out = f.in;
  t.up = f.down;
  t.pad_up = f.taps_down - 1;
  t.taps_up = f.taps_down;
  t.down = f.up;
  t.pad_down = f.taps_up - f.pad_up - 1;
  t.taps_down = f.taps_up;
  return t;
}

// Stage 1 along one axis, by phase. Intermediate pixel o = up * m + p (phase p = o mod up) reads taps
// first_tap + up * k, k < count, at input pixels m + input_offset + k: the only taps of the
// correlation that land on inserted input pixels rather than on inserted zeros. Input pixels outside
// [0, in) are the zero padding; a caller that pads its input buffer reads them without a test.
struct UpPhase {
  int64_t first_tap, input_offset, count;
};

FS_HD UpPhase up_phase(int64_t p, int64_t up, int64_t pad, int64_t taps) {
  UpPhase ph;
  ph.first_tap = (pad - p) - floor_div(pad - p, up) * up;  // (pad - p) mod up, in [0, up)
  ph.input_offset = floor_div(p + ph.first_tap - pad, up);  // exact: p + first_tap - pad is a multiple of up
  ph.count = ph.first_tap < taps ? (taps - ph.first_tap + up - 1) / up : 0;
  return ph;
}

// Stage 2. The forward keeps, per intermediate pixel, which branch of the nonlinearity it took: the
// derivative of clamp(lrelu(s) * gain) is gain where s > 0, gain * slope where s <= 0 (torch's
// leaky_relu convention at 0) and 0 where the clamp cut it (torch's clamp passes the bounds
// themselves). Two bits per pixel, four pixels to a byte, each intermediate row starting a byte.
enum LreluCode : uint8_t { kLreluNegative = 0, kLreluPositive = 1, kLreluClamped = 2 };

FS_HD int64_t mask_row_bytes(int64_t mid_w) { return (mid_w + 3) / 4; }
FS_HD int mask_shift(int64_t column) { return int(column & 3) * 2; }

// clamp(lrelu(s) * gain) and its code; clamp < 0 means no clamp.
template <typename T>
FS_HD T lrelu_forward(T s, T gain, T slope, T clamp, uint8_t& code) {
  const bool positive = s > T(0);
  T y = (positive ? s : s * slope) * gain;
  uint8_t c = positive ? uint8_t(kLreluPositive) : uint8_t(kLreluNegative);
  if (clamp >= T(0)) {
    const bool cut = (y > clamp) | (y < -clamp);
    c = cut ? uint8_t(kLreluClamped) : c;
    y = y > clamp ? clamp : y;
    y = y < -clamp ? -clamp : y;
  }
  code = c;
  return y;
}

// The derivative that code stands for.
template <typename T>
FS_HD T lrelu_derivative(uint8_t code, T gain, T slope) {
  return code == kLreluPositive ? gain : (code == kLreluNegative ? gain * slope : T(0));
}

}  // namespace fewshot

// ---- host side: argument checks, geometry and taps (CPU kernel and CUDA launcher) ------------------------
#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>

namespace fewshot {

// Both axes of one direction and the planes they run on.
struct FlreluPlan {
  AxisPlan x, y;
  int64_t batch, channels;
};

inline void check_filter(const at::Tensor& f, const char* name) {
  TORCH_CHECK(!f.defined() || f.numel() == 0 || f.dim() == 1 || f.dim() == 2, "filtered_lrelu: ", name,
              " must be 1-D or 2-D, got ", f.sizes());
}

// (width, height) of a filter in taps; an empty or undefined tensor is the identity filter [[1]].
inline std::pair<int64_t, int64_t> filter_taps(const at::Tensor& f) {
  if (!f.defined() || f.numel() == 0) return {1, 1};
  return {f.size(-1), f.size(0)};
}

inline FlreluPlan forward_plan(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, const at::Tensor& fu,
                               const at::Tensor& fd, int64_t up, int64_t down, int64_t px0, int64_t px1,
                               int64_t py0, int64_t py1) {
  TORCH_CHECK(up >= 1 && down >= 1, "filtered_lrelu: up and down must be >= 1");
  check_filter(fu, "fu");
  check_filter(fd, "fd");
  const auto [fu_w, fu_h] = filter_taps(fu);
  const auto [fd_w, fd_h] = filter_taps(fd);
  FlreluPlan plan{forward_axis(in_w, up, down, px0, px1, fu_w, fd_w), forward_axis(in_h, up, down, py0, py1, fu_h, fd_h),
                  batch, channels};
  TORCH_CHECK(plan.x.out >= 1 && plan.y.out >= 1, "filtered_lrelu: padding and filters leave an empty output for a ",
              in_h, "x", in_w, " input");
  return plan;
}

// The output gradient and the mask the forward saved must have the forward plan's shapes.
inline void check_gradient_args(const at::Tensor& gy, const at::Tensor& mask, const FlreluPlan& fwd) {
  TORCH_CHECK(gy.size(2) == fwd.y.out && gy.size(3) == fwd.x.out, "filtered_lrelu: gradient ", gy.sizes(),
              " does not match the forward's ", fwd.y.out, "x", fwd.x.out, " output");
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 4 && mask.size(0) == fwd.batch &&
                  mask.size(1) == fwd.channels && mask.size(2) == fwd.y.mid && mask.size(3) == mask_row_bytes(fwd.x.mid),
              "filtered_lrelu: mask ", mask.sizes(), " does not match the forward");
  TORCH_CHECK(mask.device() == gy.device(), "filtered_lrelu: mask and gradient on different devices");
}

// Correlation taps in the accumulation type, gain folded in: a 1-D filter is both axes' taps (gain once per
// axis), a 2-D one the full grid (gain ** 2). Reversed (every axis) unless `correlate` says the filter already
// is in correlation order: the forward reverses unless flip_filter, its transpose exactly when flip_filter.
inline at::Tensor prepared_taps(const at::Tensor& f, bool correlate, double gain_per_axis, at::ScalarType opmath,
                                const at::Device& device) {
  at::Tensor t = (!f.defined() || f.numel() == 0) ? at::ones({1}, at::TensorOptions().dtype(opmath).device(device))
                                                  : f.to(device, opmath);
  if (!correlate) t = t.dim() == 2 ? t.flip({0, 1}) : t.flip({0});
  const double gain = t.dim() == 2 ? gain_per_axis * gain_per_axis : gain_per_axis;
  return (gain == 1.0 ? t : t.mul(gain)).contiguous();
}

}  // namespace fewshot
