// filtered_lrelu on the CPU: bias, upsampling FIR, leaky ReLU/gain/clamp and downsampling FIR fused
// per (n, c) plane (planes spread over threads with at::parallel_for), streaming row by row.
//
// An output row needs taps_down rows of the intermediate, each of which needs about taps_up / up
// input rows; both windows only move forward, so each plane keeps two small rings of rows (at most
// taps_up / up input rows and taps_down intermediate rows) and computes every intermediate row
// once. The full upsampled image is never held, and only intermediate rows the output reads are
// computed. A 1-D filter (StyleGAN3's up filters, and its down filters outside the radial layers)
// runs as a horizontal pass per row and a vertical pass over the ring; a 2-D filter (the radial
// down filters of StyleGAN3-R) correlates whole ring rows with each row of its taps.
//
// Rows are kept in the layouts that make the tap loops contiguous: stage 1 writes the intermediate
// phase by phase (pixel up * m + p at m of phase p), and stage 3 reads it split by its stride
// (pixel j at j / down of phase j mod down); stage 2 moves each pixel between the two through index
// tables. The same code runs the input gradient, with the transposed plan (filtered_lrelu.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <vector>

#include "filtered_lrelu.h"

namespace fewshot {
namespace {

// Where each stage finds its pixels along x; the same for every row of every plane.
struct RowLayout {
  // Stage 1: the source row holds `up_lead` zeros, the input row, zeros up to `up_width`, so each
  // phase reads its taps without bounds tests.
  int64_t up_lead = 0, up_width = 0;
  std::vector<UpPhase> phases;
  std::vector<int64_t> phase_start, phase_len;  // phase p's pixels in the phase-major intermediate row
  // Stage 3: the intermediate row, `down_lead` zeros before it, split into `down` phases of
  // `down_phase_len` each (pixel j of the padded row at (j mod down) * down_phase_len + j / down).
  int64_t down_lead = 0, down_phase_len = 0;
  // Column c of the intermediate: its index in stage 1's row and in stage 3's split row.
  std::vector<int64_t> from_stage1, to_stage3;
};

RowLayout row_layout(const AxisPlan& a) {
  RowLayout L;
  const int64_t phases = std::min(a.up, a.mid);
  int64_t lowest = 0, highest = a.in;  // input pixels read, relative to the row's first pixel
  int64_t start = 0;
  for (int64_t p = 0; p < phases; ++p) {
    const UpPhase ph = up_phase(p, a.up, a.pad_up, a.taps_up);
    const int64_t len = (a.mid - p + a.up - 1) / a.up;
    if (ph.count > 0) {
      lowest = std::min(lowest, ph.input_offset);
      highest = std::max(highest, ph.input_offset + len + ph.count - 1);
    }
    L.phases.push_back(ph);
    L.phase_start.push_back(start);
    L.phase_len.push_back(len);
    start += len;
  }
  L.up_lead = -lowest;
  L.up_width = L.up_lead + highest;

  L.down_lead = std::max<int64_t>(0, a.pad_down);
  const int64_t first_read = L.down_lead - a.pad_down;  // split-row position read by tap 0 of output 0
  L.down_phase_len = std::max((L.down_lead + a.mid + a.down - 1) / a.down,
                              (first_read + a.taps_down - 1) / a.down + a.out);
  for (int64_t c = 0; c < a.mid; ++c) {
    const int64_t p = c % a.up;
    L.from_stage1.push_back(L.phase_start[p] + c / a.up);
    const int64_t j = L.down_lead + c;
    L.to_stage3.push_back((j % a.down) * L.down_phase_len + j / a.down);
  }
  return L;
}

// Stage 1 along x: dst (phase-major, mid pixels) += correlation of the zero-inserted source row with taps.
template <typename T>
void up_pass(T* __restrict__ dst, const T* __restrict__ src, const T* __restrict__ taps, const RowLayout& L,
             int64_t up) {
  for (size_t p = 0; p < L.phases.size(); ++p) {
    const UpPhase& ph = L.phases[p];
    T* __restrict__ d = dst + L.phase_start[p];
    const int64_t n = L.phase_len[p];
    const T* s0 = src + L.up_lead + ph.input_offset;
    for (int64_t k = 0; k < ph.count; ++k) {
      const T g = taps[ph.first_tap + up * k];
      const T* __restrict__ s = s0 + k;
      for (int64_t m = 0; m < n; ++m) d[m] += g * s[m];
    }
  }
}

// Stage 3 along x: dst (out pixels) += strided correlation of the split intermediate row with taps.
template <typename T>
void down_pass(T* __restrict__ dst, const T* __restrict__ split, const T* __restrict__ taps, const AxisPlan& a,
               const RowLayout& L) {
  for (int64_t t = 0; t < a.taps_down; ++t) {
    const int64_t q = L.down_lead - a.pad_down + t;
    const T* __restrict__ s = split + (q % a.down) * L.down_phase_len + q / a.down;
    const T g = taps[t];
    for (int64_t o = 0; o < a.out; ++o) dst[o] += g * s[o];
  }
}

// The taps of one stage: 1-D (both axes) or a 2-D grid, row-major.
template <typename T>
struct Taps {
  const T* data;
  int64_t width;
  bool separable;
  const T* row(int64_t j) const { return separable ? data : data + j * width; }
};

// Runs planes of one direction. BACKWARD: the input is the output gradient, stage 2 multiplies by the
// derivative the mask records, and there is no bias.
template <bool BACKWARD, typename scalar_t, typename T>
class PlaneRunner {
 public:
  PlaneRunner(const FlreluPlan& plan, const RowLayout& layout, Taps<T> taps1, Taps<T> taps3, T gain, T slope,
              T clamp)
      : ax_(plan.x), ay_(plan.y), L_(layout), t1_(taps1), t3_(taps3), gain_(gain), slope_(slope), clamp_(clamp) {
    ring1_ = (ay_.taps_up + ay_.up - 1) / ay_.up;  // input rows one intermediate row reads, at most
    ring3_ = ay_.taps_down;                        // intermediate rows one output row reads
    const int64_t split_width = L_.down_phase_len * ax_.down;
    // Margins are zero once and stay so: rows only ever write their interiors.
    in_rows_.assign((t1_.separable ? 1 : ring1_) * L_.up_width, T(0));
    if (t1_.separable) h_rows_.assign(ring1_ * ax_.mid, T(0));
    mid_.assign(ax_.mid, T(0));
    split_.assign((t3_.separable ? 1 : ring3_) * split_width, T(0));
    if (t3_.separable) d_rows_.assign(ring3_ * ax_.out, T(0));
    codes_.assign(mask_row_bytes(ax_.mid) * 4, 0);
    acc_.assign(ax_.out, T(0));
  }

  void run(const scalar_t* in, scalar_t* out, T bias, uint8_t* mask) {
    mask_ = mask;
    next_in_ = next_mid_ = 0;
    for (int64_t oy = 0; oy < ay_.out; ++oy) {
      const AxisTaps rows = axis_taps(oy, 1, ay_.down, ay_.pad_down, ay_.mid, ay_.taps_down);
      for (int64_t r = std::max(next_mid_, rows.first_input); r < rows.first_input + rows.count; ++r)
        produce_mid_row(in, bias, r);
      next_mid_ = std::max(next_mid_, rows.first_input + rows.count);
      std::fill(acc_.begin(), acc_.end(), T(0));
      for (int64_t k = 0; k < rows.count; ++k) {
        const int64_t r = rows.first_input + k, tap = rows.first_tap + k;
        if (t3_.separable) {
          const T g = t3_.data[tap];
          const T* __restrict__ d = d_rows_.data() + (r % ring3_) * ax_.out;
          for (int64_t o = 0; o < ax_.out; ++o) acc_[o] += g * d[o];
        } else {
          down_pass(acc_.data(), split_row(r), t3_.row(tap), ax_, L_);
        }
      }
      scalar_t* __restrict__ y = out + oy * ax_.out;
      for (int64_t o = 0; o < ax_.out; ++o) y[o] = scalar_t(acc_[o]);
    }
  }

 private:
  T* split_row(int64_t r) { return split_.data() + (t3_.separable ? 0 : r % ring3_) * L_.down_phase_len * ax_.down; }
  T* in_row(int64_t iy) { return in_rows_.data() + (t1_.separable ? 0 : iy % ring1_) * L_.up_width; }

  // Input row iy (plus the bias) into its padded buffer; with a 1-D filter also its horizontal pass.
  void load_input_row(const scalar_t* in, T bias, int64_t iy) {
    const scalar_t* __restrict__ x = in + iy * ax_.in;
    T* __restrict__ dst = in_row(iy) + L_.up_lead;
    for (int64_t i = 0; i < ax_.in; ++i) dst[i] = T(x[i]) + bias;
    if (t1_.separable) {
      T* h = h_rows_.data() + (iy % ring1_) * ax_.mid;
      std::fill(h, h + ax_.mid, T(0));
      up_pass(h, in_row(iy), t1_.data, L_, ax_.up);
    }
  }

  void produce_mid_row(const scalar_t* in, T bias, int64_t r) {
    // Stage 1: the intermediate row r, phase-major.
    const AxisTaps rows = axis_taps(r, ay_.up, 1, ay_.pad_up, ay_.in, ay_.taps_up);
    for (int64_t iy = std::max(next_in_, rows.first_input); iy < rows.first_input + rows.count; ++iy)
      load_input_row(in, bias, iy);
    next_in_ = std::max(next_in_, rows.first_input + rows.count);
    std::fill(mid_.begin(), mid_.end(), T(0));
    for (int64_t k = 0; k < rows.count; ++k) {
      const int64_t iy = rows.first_input + k, tap = rows.first_tap + ay_.up * k;
      if (t1_.separable) {
        const T g = t1_.data[tap];
        const T* __restrict__ h = h_rows_.data() + (iy % ring1_) * ax_.mid;
        T* __restrict__ m = mid_.data();
        for (int64_t c = 0; c < ax_.mid; ++c) m[c] += g * h[c];
      } else {
        up_pass(mid_.data(), in_row(iy), t1_.row(tap), L_, ax_.up);
      }
    }
    // Stage 2, moving each pixel into stage 3's split layout.
    T* __restrict__ split = split_row(r);
    const int64_t* __restrict__ from = L_.from_stage1.data();
    const int64_t* __restrict__ to = L_.to_stage3.data();
    uint8_t* __restrict__ codes = codes_.data();
    const int64_t row_bytes = mask_row_bytes(ax_.mid);
    if constexpr (BACKWARD) {
      const uint8_t* m = mask_ + r * row_bytes;
      for (int64_t c = 0; c < ax_.mid; ++c) codes[c] = (m[c >> 2] >> mask_shift(c)) & 3;
      for (int64_t c = 0; c < ax_.mid; ++c) split[to[c]] = mid_[from[c]] * lrelu_derivative(codes[c], gain_, slope_);
    } else {
      for (int64_t c = 0; c < ax_.mid; ++c) split[to[c]] = lrelu_forward(mid_[from[c]], gain_, slope_, clamp_, codes[c]);
      if (mask_ != nullptr) {
        uint8_t* m = mask_ + r * row_bytes;
        for (int64_t j = 0; j < row_bytes; ++j)
          m[j] = uint8_t(codes[4 * j] | (codes[4 * j + 1] << 2) | (codes[4 * j + 2] << 4) | (codes[4 * j + 3] << 6));
      }
    }
    // Stage 3 along x for a 1-D filter; a 2-D one reads the split row from the ring directly.
    if (t3_.separable) {
      T* d = d_rows_.data() + (r % ring3_) * ax_.out;
      std::fill(d, d + ax_.out, T(0));
      down_pass(d, split, t3_.data, ax_, L_);
    }
  }

  const AxisPlan ax_, ay_;
  const RowLayout& L_;
  const Taps<T> t1_, t3_;
  const T gain_, slope_, clamp_;
  int64_t ring1_ = 1, ring3_ = 1, next_in_ = 0, next_mid_ = 0;
  uint8_t* mask_ = nullptr;
  std::vector<T> in_rows_, h_rows_, mid_, split_, d_rows_, acc_;
  std::vector<uint8_t> codes_;
};

template <bool BACKWARD, typename scalar_t>
void run_planes(const at::Tensor& in, at::Tensor& out, const at::Tensor& b, uint8_t* mask, const FlreluPlan& plan,
                const at::Tensor& taps1, const at::Tensor& taps3, double gain, double slope, double clamp) {
  using T = at::opmath_type<scalar_t>;
  const RowLayout layout = row_layout(plan.x);
  const Taps<T> t1{taps1.const_data_ptr<T>(), taps1.size(-1), taps1.dim() == 1};
  const Taps<T> t3{taps3.const_data_ptr<T>(), taps3.size(-1), taps3.dim() == 1};
  const scalar_t* ip = in.const_data_ptr<scalar_t>();
  const scalar_t* bp = b.defined() && b.numel() > 0 ? b.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const int64_t in_plane = plan.y.in * plan.x.in, out_plane = plan.y.out * plan.x.out;
  const int64_t mask_plane = plan.y.mid * mask_row_bytes(plan.x.mid);
  at::parallel_for(0, plan.batch * plan.channels, 1, [&](int64_t begin, int64_t end) {
    PlaneRunner<BACKWARD, scalar_t, T> runner(plan, layout, t1, t3, T(gain), T(slope), T(clamp));
    for (int64_t plane = begin; plane < end; ++plane) {
      const T bias = bp ? T(bp[plane % plan.channels]) : T(0);
      runner.run(ip + plane * in_plane, op + plane * out_plane, bias, mask ? mask + plane * mask_plane : nullptr);
    }
  });
}

}  // namespace

std::vector<at::Tensor> filtered_lrelu_cpu(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& fu,
                                           const at::Tensor& fd, int64_t up, int64_t down, int64_t px0, int64_t px1,
                                           int64_t py0, int64_t py1, double gain, double slope, double clamp,
                                           bool flip_filter, bool write_mask) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 4, "filtered_lrelu_cpu: expected a CPU NCHW tensor");
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
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "filtered_lrelu_cpu", [&] {
    constexpr auto opmath = c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value;
    const at::Tensor taps1 = prepared_taps(fu, flip_filter, double(up), opmath, x.device());
    const at::Tensor taps3 = prepared_taps(fd, flip_filter, 1.0, opmath, x.device());
    run_planes<false, scalar_t>(x, y, b, write_mask ? mask.mutable_data_ptr<uint8_t>() : nullptr, plan, taps1, taps3,
                                gain, slope, clamp);
  });
  return {y, mask};
}

at::Tensor filtered_lrelu_grad_cpu(const at::Tensor& gy_in, const at::Tensor& mask_in, const at::Tensor& fu,
                                   const at::Tensor& fd, int64_t in_h, int64_t in_w, int64_t up, int64_t down,
                                   int64_t px0, int64_t px1, int64_t py0, int64_t py1, double gain, double slope,
                                   bool flip_filter) {
  TORCH_CHECK(gy_in.device().is_cpu() && gy_in.dim() == 4, "filtered_lrelu_grad_cpu: expected a CPU NCHW tensor");
  const at::Tensor gy = gy_in.contiguous();
  const at::Tensor mask = mask_in.contiguous();
  const FlreluPlan fwd = forward_plan(gy.size(0), gy.size(1), in_h, in_w, fu, fd, up, down, px0, px1, py0, py1);
  check_gradient_args(gy, mask, fwd);
  const FlreluPlan plan{transposed_axis(fwd.x), transposed_axis(fwd.y), fwd.batch, fwd.channels};
  at::Tensor gx = at::empty({plan.batch, plan.channels, in_h, in_w}, gy.options());
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "filtered_lrelu_grad_cpu", [&] {
    constexpr auto opmath = c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value;
    const at::Tensor taps1 = prepared_taps(fd, !flip_filter, 1.0, opmath, gy.device());
    const at::Tensor taps3 = prepared_taps(fu, !flip_filter, double(up), opmath, gy.device());
    run_planes<true, scalar_t>(gy, gx, at::Tensor(), mask.data_ptr<uint8_t>(), plan, taps1, taps3, gain, slope, -1.0);
  });
  return gx;
}

}  // namespace fewshot
