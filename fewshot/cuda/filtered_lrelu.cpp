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
// (pixel j at j / down of phase j mod down); stage 2 moves each pixel between the two in runs of
// fixed stride. Every tap loop is one blocked weighted sum of rows (weighted_sum), compiled twice:
// for any x86-64 and, taken at run time where the CPU has them, for AVX2 + FMA. The same code runs
// the input gradient, with the transposed plan (filtered_lrelu.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
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
  // Column c of the intermediate: its index in stage 1's row and in stage 3's split row (from_stage1 has 4 *
  // mask_row_bytes entries, the padding ones pointing at index mid, a code that is always 0).
  std::vector<int64_t> from_stage1, to_stage3;
  // The columns c0, c0 + P, c0 + 2P, ... (P = lcm(up, down)) sit at evenly spaced indices in both layouts:
  // stage 2 runs over these runs with fixed strides, so it vectorizes.
  struct Run {
    int64_t from, from_stride, to, to_stride, count;
  };
  std::vector<Run> runs;
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
  for (int64_t c = a.mid; c < mask_row_bytes(a.mid) * 4; ++c) L.from_stage1.push_back(a.mid);
  const int64_t period = std::lcm(a.up, a.down);
  for (int64_t c0 = 0; c0 < std::min(period, a.mid); ++c0)
    L.runs.push_back({L.from_stage1[c0], period / a.up, L.to_stage3[c0], period / a.down, (a.mid - c0 + period - 1) / period});
  return L;
}

// dst[o] = (accumulate ? dst[o] : 0) + sum_k weights[k] * sources[k][o] for o < n: every tap loop of the
// kernel is one of these. A block of dst (kVecs vectors of kBytes) stays in registers across all the terms,
// so each term costs one load and one multiply-add per pixel. Written with GCC/Clang vector types: SSE2 on any
// x86-64, AVX2 + FMA in the clone below.
template <int kBytes, int kVecs, typename T>
__attribute__((always_inline)) inline void weighted_sum_body(T* __restrict__ dst, const T* const* sources,
                                                             const T* weights, int64_t terms, int64_t n,
                                                             bool accumulate) {
  typedef T Vec __attribute__((vector_size(kBytes)));
  constexpr int64_t kLanes = kBytes / sizeof(T), kBlock = kLanes * kVecs;
  int64_t o = 0;
  for (; o + kBlock <= n; o += kBlock) {
    Vec acc[kVecs];
    for (int v = 0; v < kVecs; ++v) {
      acc[v] = Vec{};
      if (accumulate) __builtin_memcpy(&acc[v], dst + o + v * kLanes, sizeof(Vec));
    }
    for (int64_t k = 0; k < terms; ++k) {
      const Vec g = Vec{} + weights[k];
      const T* src = sources[k] + o;
      for (int v = 0; v < kVecs; ++v) {
        Vec s;
        __builtin_memcpy(&s, src + v * kLanes, sizeof(Vec));
        acc[v] += g * s;
      }
    }
    for (int v = 0; v < kVecs; ++v) __builtin_memcpy(dst + o + v * kLanes, &acc[v], sizeof(Vec));
  }
  for (; o + kLanes <= n; o += kLanes) {
    Vec acc = Vec{};
    if (accumulate) __builtin_memcpy(&acc, dst + o, sizeof(Vec));
    for (int64_t k = 0; k < terms; ++k) {
      Vec s;
      __builtin_memcpy(&s, sources[k] + o, sizeof(Vec));
      acc += (Vec{} + weights[k]) * s;
    }
    __builtin_memcpy(dst + o, &acc, sizeof(Vec));
  }
  for (; o < n; ++o) {
    T acc = accumulate ? dst[o] : T(0);
    for (int64_t k = 0; k < terms; ++k) acc += weights[k] * sources[k][o];
    dst[o] = acc;
  }
}

template <typename T>
void weighted_sum_baseline(T* dst, const T* const* sources, const T* weights, int64_t terms, int64_t n,
                           bool accumulate) {
  weighted_sum_body<16, 8>(dst, sources, weights, terms, n, accumulate);  // 8 of the 16 SSE registers
}

// The same body compiled for AVX2 + FMA, taken when the CPU has them (checked once, at run time).
template <typename T>
__attribute__((target("avx2,fma"))) void weighted_sum_avx2(T* dst, const T* const* sources, const T* weights,
                                                          int64_t terms, int64_t n, bool accumulate) {
  weighted_sum_body<32, 8>(dst, sources, weights, terms, n, accumulate);  // 8 accumulators hide FMA latency
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

template <typename T>
void weighted_sum(T* dst, const T* const* sources, const T* weights, int64_t terms, int64_t n, bool accumulate) {
  if (cpu_has_avx2_fma())
    weighted_sum_avx2(dst, sources, weights, terms, n, accumulate);
  else
    weighted_sum_baseline(dst, sources, weights, terms, n, accumulate);
}

// A list of weighted rows for weighted_sum, reused from call to call.
template <typename T>
struct Terms {
  std::vector<const T*> sources;
  std::vector<T> weights;
  void clear() {
    sources.clear();
    weights.clear();
  }
  void add(const T* source, T weight) {
    sources.push_back(source);
    weights.push_back(weight);
  }
  void sum_into(T* dst, int64_t n, bool accumulate = false) const {
    weighted_sum(dst, sources.data(), weights.data(), int64_t(sources.size()), n, accumulate);
  }
};

// The taps of one stage: 1-D (both axes) or a 2-D grid, row-major.
template <typename T>
struct Taps {
  const T* data;
  int64_t width;
  bool separable;
  const T* row(int64_t j) const { return separable ? data : data + j * width; }
};

// Runs planes of one direction. BACKWARD: the input is the output gradient, stage 2 multiplies by the
// derivative the mask records, and there is no bias. T is float or double (the CPU kernels' types, their
// own accumulation types).
template <bool BACKWARD, typename T>
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
    codes_.assign(ax_.mid + 1, 0);  // in stage 1's order, and the padding's 0
  }

  void run(const T* in, T* out, T bias, uint8_t* mask) {
    mask_ = mask;
    next_in_ = next_mid_ = 0;
    for (int64_t oy = 0; oy < ay_.out; ++oy) {
      const AxisTaps rows = axis_taps(oy, 1, ay_.down, ay_.pad_down, ay_.mid, ay_.taps_down);
      for (int64_t r = std::max(next_mid_, rows.first_input); r < rows.first_input + rows.count; ++r)
        produce_mid_row(in, bias, r);
      next_mid_ = std::max(next_mid_, rows.first_input + rows.count);
      // Stage 3 along y (1-D filter) or in both axes at once (2-D).
      terms_.clear();
      for (int64_t k = 0; k < rows.count; ++k) {
        const int64_t r = rows.first_input + k, tap = rows.first_tap + k;
        if (t3_.separable)
          terms_.add(d_rows_.data() + (r % ring3_) * ax_.out, t3_.data[tap]);
        else
          add_down_terms(split_row(r), t3_.row(tap));
      }
      terms_.sum_into(out + oy * ax_.out, ax_.out);
    }
  }

 private:
  T* split_row(int64_t r) { return split_.data() + (t3_.separable ? 0 : r % ring3_) * L_.down_phase_len * ax_.down; }
  T* in_row(int64_t iy) { return in_rows_.data() + (t1_.separable ? 0 : iy % ring1_) * L_.up_width; }

  // Stage 1 along x of one source row and phase: output m of the phase reads taps first_tap + up * k at
  // source pixels m + input_offset + k.
  void add_up_terms(const T* src, const T* taps, const UpPhase& ph) {
    for (int64_t k = 0; k < ph.count; ++k) terms_.add(src + L_.up_lead + ph.input_offset + k, taps[ph.first_tap + ax_.up * k]);
  }

  // Stage 3 along x of one split row: output o reads tap t at split position o + q / down of phase q mod down.
  void add_down_terms(const T* split, const T* taps) {
    for (int64_t t = 0; t < ax_.taps_down; ++t) {
      const int64_t q = L_.down_lead - ax_.pad_down + t;
      terms_.add(split + (q % ax_.down) * L_.down_phase_len + q / ax_.down, taps[t]);
    }
  }

  // Input row iy (plus the bias) into its padded buffer; with a 1-D filter also its pass along x.
  void load_input_row(const T* in, T bias, int64_t iy) {
    const T* __restrict__ x = in + iy * ax_.in;
    T* __restrict__ dst = in_row(iy) + L_.up_lead;
    for (int64_t i = 0; i < ax_.in; ++i) dst[i] = x[i] + bias;
    if (!t1_.separable) return;
    T* h = h_rows_.data() + (iy % ring1_) * ax_.mid;
    for (size_t p = 0; p < L_.phases.size(); ++p) {
      terms_.clear();
      add_up_terms(in_row(iy), t1_.data, L_.phases[p]);
      terms_.sum_into(h + L_.phase_start[p], L_.phase_len[p]);
    }
  }

  void produce_mid_row(const T* in, T bias, int64_t r) {
    // Stage 1: the intermediate row r, phase-major.
    const AxisTaps rows = axis_taps(r, ay_.up, 1, ay_.pad_up, ay_.in, ay_.taps_up);
    for (int64_t iy = std::max(next_in_, rows.first_input); iy < rows.first_input + rows.count; ++iy)
      load_input_row(in, bias, iy);
    next_in_ = std::max(next_in_, rows.first_input + rows.count);
    if (t1_.separable) {
      terms_.clear();
      for (int64_t k = 0; k < rows.count; ++k) {
        const int64_t iy = rows.first_input + k;
        terms_.add(h_rows_.data() + (iy % ring1_) * ax_.mid, t1_.data[rows.first_tap + ay_.up * k]);
      }
      terms_.sum_into(mid_.data(), ax_.mid);
    } else {
      for (size_t p = 0; p < L_.phases.size(); ++p) {
        terms_.clear();
        for (int64_t k = 0; k < rows.count; ++k)
          add_up_terms(in_row(rows.first_input + k), t1_.row(rows.first_tap + ay_.up * k), L_.phases[p]);
        terms_.sum_into(mid_.data() + L_.phase_start[p], L_.phase_len[p]);
      }
    }
    // Stage 2, into stage 3's split layout.
    T* split = split_row(r);
    stage2(split, r);
    // Stage 3 along x for a 1-D filter; a 2-D one reads the split row from the ring directly.
    if (t3_.separable) {
      terms_.clear();
      add_down_terms(split, t3_.data);
      terms_.sum_into(d_rows_.data() + (r % ring3_) * ax_.out, ax_.out);
    }
  }

  // Stage 2 of row r: mid_ (stage 1's order) -> split (stage 3's), the codes in stage 1's order too.
  void stage2(T* __restrict__ split, int64_t r) {
    const int64_t* __restrict__ from = L_.from_stage1.data();
    uint8_t* __restrict__ codes = codes_.data();
    const int64_t row_bytes = mask_row_bytes(ax_.mid);
    if constexpr (BACKWARD) {
      const uint8_t* m = mask_ + r * row_bytes;
      for (int64_t c = 0; c < ax_.mid; ++c) codes[from[c]] = (m[c >> 2] >> mask_shift(c)) & 3;
    }
    for (const RowLayout::Run& run : L_.runs) {
      const T* s = mid_.data() + run.from;
      uint8_t* code = codes + run.from;
      T* y = split + run.to;
      // The strides of StyleGAN3's layers (up == down; up 4 and down 2, and its transpose) as constants.
      if (run.from_stride == 1 && run.to_stride == 1)
        stage2_run<1, 1>(s, y, code, run.count);
      else if (run.from_stride == 1 && run.to_stride == 2)
        stage2_run<1, 2>(s, y, code, run.count);
      else if (run.from_stride == 2 && run.to_stride == 1)
        stage2_run<2, 1>(s, y, code, run.count);
      else
        stage2_run<0, 0>(s, y, code, run.count, run.from_stride, run.to_stride);
    }
    if (!BACKWARD && mask_ != nullptr) {
      uint8_t* m = mask_ + r * row_bytes;
      for (int64_t j = 0; j < row_bytes; ++j) {
        const int64_t* f = from + 4 * j;
        m[j] = uint8_t(codes[f[0]] | (codes[f[1]] << 2) | (codes[f[2]] << 4) | (codes[f[3]] << 6));
      }
    }
  }

  // Stage 2 on one run; FROM/TO are its strides when known at compile time (0: the arguments). Selects only.
  template <int FROM, int TO>
  void stage2_run(const T* __restrict__ s, T* __restrict__ y, uint8_t* __restrict__ codes, int64_t n,
                  int64_t from_stride = FROM, int64_t to_stride = TO) {
    const int64_t fs = FROM ? FROM : from_stride, ts = TO ? TO : to_stride;
    if constexpr (BACKWARD) {
      for (int64_t i = 0; i < n; ++i) y[i * ts] = s[i * fs] * lrelu_derivative(codes[i * fs], gain_, slope_);
    } else {
      for (int64_t i = 0; i < n; ++i) y[i * ts] = lrelu_forward(s[i * fs], gain_, slope_, clamp_, codes[i * fs]);
    }
  }

  const AxisPlan ax_, ay_;
  const RowLayout& L_;
  const Taps<T> t1_, t3_;
  const T gain_, slope_, clamp_;
  int64_t ring1_ = 1, ring3_ = 1, next_in_ = 0, next_mid_ = 0;
  uint8_t* mask_ = nullptr;
  std::vector<T> in_rows_, h_rows_, mid_, split_, d_rows_;
  std::vector<uint8_t> codes_;
  Terms<T> terms_;
};

template <bool BACKWARD, typename T>
void run_planes(const at::Tensor& in, at::Tensor& out, const at::Tensor& b, uint8_t* mask, const FlreluPlan& plan,
                const at::Tensor& taps1, const at::Tensor& taps3, double gain, double slope, double clamp) {
  static_assert(std::is_same_v<at::opmath_type<T>, T>, "the CPU kernels run float and double in their own type");
  const RowLayout layout = row_layout(plan.x);
  const Taps<T> t1{taps1.const_data_ptr<T>(), taps1.size(-1), taps1.dim() == 1};
  const Taps<T> t3{taps3.const_data_ptr<T>(), taps3.size(-1), taps3.dim() == 1};
  const T* ip = in.const_data_ptr<T>();
  const T* bp = b.defined() && b.numel() > 0 ? b.const_data_ptr<T>() : nullptr;
  T* op = out.mutable_data_ptr<T>();
  const int64_t in_plane = plan.y.in * plan.x.in, out_plane = plan.y.out * plan.x.out;
  const int64_t mask_plane = plan.y.mid * mask_row_bytes(plan.x.mid);
  at::parallel_for(0, plan.batch * plan.channels, 1, [&](int64_t begin, int64_t end) {
    PlaneRunner<BACKWARD, T> runner(plan, layout, t1, t3, T(gain), T(slope), T(clamp));
    for (int64_t plane = begin; plane < end; ++plane) {
      const T bias = bp ? bp[plane % plan.channels] : T(0);
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
