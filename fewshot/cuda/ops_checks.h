// Argument checks shared by the CPU and CUDA entry points (host code only).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "ops_common.h"

namespace fewshot {

struct BiasActShape {
  int64_t numel;
  int64_t channels;  // entries of the bias (1 without a bias)
  int64_t inner;     // elements after the bias dimension
  bool has_bias;
};

inline BiasActShape check_bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& t, int64_t dim,
                                   int64_t act, int64_t order) {
  TORCH_CHECK(x.dim() >= 1 && dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for ", x.sizes());
  TORCH_CHECK(act >= kLinear && act <= kSwish, "bias_act: unknown activation code ", act);
  TORCH_CHECK(order >= 0 && order <= kMaxOrder, "bias_act: derivative order ", order, " not implemented");
  BiasActShape shape{x.numel(), 1, x.numel(), b.defined() && b.numel() > 0};
  if (shape.has_bias) {
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: bias ", b.sizes(), " does not match dim ", dim,
                " of ", x.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type() && b.device() == x.device(), "bias_act: bias dtype/device differ");
    shape.channels = x.size(dim);
    shape.inner = 1;
    for (int64_t d = dim + 1; d < x.dim(); ++d) shape.inner *= x.size(d);
    if (shape.inner == 0) shape.inner = 1;
  }
  if (order > 0) {
    TORCH_CHECK(t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type() && t.device() == x.device(),
                "bias_act: gradient ", t.sizes(), " does not match input ", x.sizes());
  }
  return shape;
}

struct UpfirdnShape {
  int64_t batch_channels, in_h, in_w, out_h, out_w, taps_y, taps_x;
};

inline UpfirdnShape check_upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                                    int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: expected NCHW input, got ", x.sizes());
  TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "upfirdn2d: expected a 2-D filter, got ", f.sizes());
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d: filter and input on different devices");
  UpfirdnShape s;
  s.batch_channels = x.size(0) * x.size(1);
  s.in_h = x.size(2);
  s.in_w = x.size(3);
  s.taps_y = f.size(0);
  s.taps_x = f.size(1);
  s.out_h = upfirdn_out_size(s.in_h, upy, downy, py0, py1, s.taps_y);
  s.out_w = upfirdn_out_size(s.in_w, upx, downx, px0, px1, s.taps_x);
  TORCH_CHECK(s.out_h >= 1 && s.out_w >= 1, "upfirdn2d: padding/filter leave an empty output for input ", x.sizes());
  return s;
}

// The correlation taps in the accumulation type: flipped unless flip_filter (a true convolution).
inline at::Tensor correlation_taps(const at::Tensor& f, bool flip_filter, at::ScalarType opmath) {
  return (flip_filter ? f : f.flip({0, 1})).to(opmath).contiguous();
}

}  // namespace fewshot
