// Winograd F(4x4, 3x3) tile transforms on the CPU (winograd_ref.py defines them in plain PyTorch).
//
// A 3x3 stride-1 convolution with padding 1 is computed per 4x4 output tile as
// out = A^T [ (G g G^T) . (B^T d B) ] A, d the 6x6 input tile around it: 36 matrix products of
// [O, C] x [C, tiles] instead of 9 of [O, C] x [C, pixels], 4x fewer multiply-adds, in GEMMs torch
// runs at the machine's peak. The four kernels here are the linear maps around those GEMMs and
// their adjoints (the backward of each is the other one), each one pass over memory:
//   input      x [N, C, H, W]          -> V [36, C, N*TH*TW]   (zero padding 1, 6x6 tiles at stride 4)
//   input_t    V [36, C, N*TH*TW]      -> x [N, C, H, W]       (adjoint: overlapping tiles summed)
//   output     M [36, O, N*TH*TW]      -> y [N, O, H, W]       (4x4 tiles, cropped at the edges)
//   output_t   y [N, O, H, W]          -> M [36, O, N*TH*TW]   (adjoint)
// TH = ceil(H / 4), TW = ceil(W / 4). Each (batch, channel) plane belongs to one thread, so the
// adjoint's overlapping tiles accumulate without atomics. The matrices are compile-time constants;
// the fully unrolled products below drop their zero terms.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "ops_checks.h"

namespace fewshot {
namespace {

constexpr int kIn = 6, kOut = 4, kTaps = kIn * kIn;

constexpr double kBT[kIn][kIn] = {
    {4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
constexpr double kAT[kOut][kIn] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1},
};

// out[r][c] = sum_k L[r][k] in[k][c]  (in: R_in x C, out: R x C), L given as L[r][k] or transposed.
template <int R, int K, int C, bool kTransposed, int LR, int LC, typename T>
inline void left(const double (&L)[LR][LC], const T* in, T* out) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      T acc = T(0);
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        const double coef = kTransposed ? L[k][r] : L[r][k];
        if (coef != 0) acc += T(coef) * in[k * C + c];
      }
      out[r * C + c] = acc;
    }
  }
}

// out[r][c] = sum_k in[r][k] L[c][k]  (right product with L^T), or with L when transposed.
template <int R, int K, int C, bool kTransposed, int LR, int LC, typename T>
inline void right(const double (&L)[LR][LC], const T* in, T* out) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      T acc = T(0);
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        const double coef = kTransposed ? L[k][c] : L[c][k];
        if (coef != 0) acc += in[r * K + k] * T(coef);
      }
      out[r * C + c] = acc;
    }
  }
}

struct Tiles {
  int64_t n, c, h, w, th, tw;
  int64_t per_image() const { return th * tw; }
  int64_t count() const { return n * th * tw; }
};

Tiles tiles_of(int64_t n, int64_t c, int64_t h, int64_t w) {
  return {n, c, h, w, (h + kOut - 1) / kOut, (w + kOut - 1) / kOut};
}

template <typename scalar_t>
void input_kernel(const scalar_t* x, scalar_t* v, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();  // distance between the 36 transformed planes
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / t.c, ch = plane % t.c;
      const scalar_t* xp = x + plane * t.h * t.w;
      scalar_t* out = v + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        for (int64_t tx = 0; tx < t.tw; ++tx) {
          scalar_t d[kTaps], r[kTaps], s[kTaps];
          const int64_t y0 = kOut * ty - 1, x0 = kOut * tx - 1;
          for (int j = 0; j < kIn; ++j) {
            const int64_t iy = y0 + j;
            const bool row_ok = iy >= 0 && iy < t.h;
            for (int i = 0; i < kIn; ++i) {
              const int64_t ix = x0 + i;
              d[j * kIn + i] = (row_ok && ix >= 0 && ix < t.w) ? xp[iy * t.w + ix] : scalar_t(0);
            }
          }
          left<kIn, kIn, kIn, false>(kBT, d, r);   // B^T d
          right<kIn, kIn, kIn, false>(kBT, r, s);  // (B^T d) B
          const int64_t idx = ty * t.tw + tx;
          for (int k = 0; k < kTaps; ++k) out[k * stride_k + idx] = s[k];
        }
      }
    }
  });
}

template <typename scalar_t>
void input_t_kernel(const scalar_t* v, scalar_t* x, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / t.c, ch = plane % t.c;
      scalar_t* xp = x + plane * t.h * t.w;
      for (int64_t i = 0; i < t.h * t.w; ++i) xp[i] = scalar_t(0);
      const scalar_t* in = v + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        for (int64_t tx = 0; tx < t.tw; ++tx) {
          scalar_t s[kTaps], r[kTaps], d[kTaps];
          const int64_t idx = ty * t.tw + tx;
          for (int k = 0; k < kTaps; ++k) s[k] = in[k * stride_k + idx];
          left<kIn, kIn, kIn, true>(kBT, s, r);   // B s
          right<kIn, kIn, kIn, true>(kBT, r, d);  // (B s) B^T
          const int64_t y0 = kOut * ty - 1, x0 = kOut * tx - 1;
          for (int j = 0; j < kIn; ++j) {
            const int64_t iy = y0 + j;
            if (iy < 0 || iy >= t.h) continue;
            for (int i = 0; i < kIn; ++i) {
              const int64_t ix = x0 + i;
              if (ix >= 0 && ix < t.w) xp[iy * t.w + ix] += d[j * kIn + i];
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void output_kernel(const scalar_t* m, scalar_t* y, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();  // here t.c is the output channel count
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / t.c, ch = plane % t.c;
      scalar_t* yp = y + plane * t.h * t.w;
      const scalar_t* in = m + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        for (int64_t tx = 0; tx < t.tw; ++tx) {
          const int64_t idx = ty * t.tw + tx;
          scalar_t s[kTaps], r[kOut * kIn], o[kOut * kOut];
          for (int k = 0; k < kTaps; ++k) s[k] = in[k * stride_k + idx];
          left<kOut, kIn, kIn, false>(kAT, s, r);    // A^T s
          right<kOut, kIn, kOut, false>(kAT, r, o);  // (A^T s) A
          const int64_t oy = kOut * ty, ox = kOut * tx;
          const int rows = static_cast<int>(std::min<int64_t>(kOut, t.h - oy));
          const int cols = static_cast<int>(std::min<int64_t>(kOut, t.w - ox));
          for (int j = 0; j < rows; ++j) {
            for (int i = 0; i < cols; ++i) yp[(oy + j) * t.w + ox + i] = o[j * kOut + i];
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void output_t_kernel(const scalar_t* y, scalar_t* m, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / t.c, ch = plane % t.c;
      const scalar_t* yp = y + plane * t.h * t.w;
      scalar_t* out = m + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        for (int64_t tx = 0; tx < t.tw; ++tx) {
          const int64_t oy = kOut * ty, ox = kOut * tx;
          scalar_t g[kOut * kOut], r[kIn * kOut], s[kTaps];
          for (int j = 0; j < kOut; ++j) {
            for (int i = 0; i < kOut; ++i) {
              const bool inside = oy + j < t.h && ox + i < t.w;
              g[j * kOut + i] = inside ? yp[(oy + j) * t.w + ox + i] : scalar_t(0);
            }
          }
          left<kIn, kOut, kOut, true>(kAT, g, r);   // A g
          right<kIn, kOut, kIn, true>(kAT, r, s);   // (A g) A^T
          const int64_t idx = ty * t.tw + tx;
          for (int k = 0; k < kTaps; ++k) out[k * stride_k + idx] = s[k];
        }
      }
    }
  });
}

// Allocates the output and runs one of the kernels above on contiguous float or double data.
template <typename Kernel>
at::Tensor run_transform(const at::Tensor& in, at::IntArrayRef out_sizes, const Tiles& t, Kernel kernel) {
  at::Tensor out = at::empty(out_sizes, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "winograd_transform", [&] {
    kernel(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), t);
  });
  return out;
}

}  // namespace

// x [N, C, H, W] -> V [36, C, N*TH*TW]
at::Tensor winograd_input_cpu(const at::Tensor& x_in) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.device().is_cpu(), "winograd_input: x must be a 4-D CPU tensor");
  const at::Tensor x = x_in.contiguous();
  const Tiles t = tiles_of(x.size(0), x.size(1), x.size(2), x.size(3));
  return run_transform(x, {kTaps, t.c, t.count()}, t, [](auto* in, auto* out, const Tiles& tt) { input_kernel(in, out, tt); });
}

// V [36, C, N*TH*TW] -> x [N, C, H, W] (the adjoint of winograd_input)
at::Tensor winograd_input_t_cpu(const at::Tensor& v_in, int64_t n, int64_t h, int64_t w) {
  const at::Tensor v = v_in.contiguous();
  const Tiles t = tiles_of(n, v.size(1), h, w);
  TORCH_CHECK(v.dim() == 3 && v.size(0) == kTaps && v.size(2) == t.count(), "winograd_input_t: bad V shape");
  return run_transform(v, {n, t.c, h, w}, t, [](auto* in, auto* out, const Tiles& tt) { input_t_kernel(in, out, tt); });
}

// M [36, O, N*TH*TW] -> y [N, O, H, W]
at::Tensor winograd_output_cpu(const at::Tensor& m_in, int64_t n, int64_t h, int64_t w) {
  const at::Tensor m = m_in.contiguous();
  const Tiles t = tiles_of(n, m.size(1), h, w);
  TORCH_CHECK(m.dim() == 3 && m.size(0) == kTaps && m.size(2) == t.count(), "winograd_output: bad M shape");
  return run_transform(m, {n, t.c, h, w}, t, [](auto* in, auto* out, const Tiles& tt) { output_kernel(in, out, tt); });
}

// y [N, O, H, W] -> M [36, O, N*TH*TW] (the adjoint of winograd_output)
at::Tensor winograd_output_t_cpu(const at::Tensor& y_in) {
  TORCH_CHECK(y_in.dim() == 4 && y_in.device().is_cpu(), "winograd_output_t: y must be a 4-D CPU tensor");
  const at::Tensor y = y_in.contiguous();
  const Tiles t = tiles_of(y.size(0), y.size(1), y.size(2), y.size(3));
  return run_transform(y, {kTaps, t.c, t.count()}, t, [](auto* in, auto* out, const Tiles& tt) { output_t_kernel(in, out, tt); });
}

}  // namespace fewshot
