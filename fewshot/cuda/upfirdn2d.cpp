// upfirdn2d on the CPU: each output pixel sums only the taps that land on real input pixels
// (axis_taps in ops_common.h), so the zero-inserted, padded intermediate of the reference is
// never built. Rows of the output are spread over threads with at::parallel_for. The common
// StyleGAN2 cases (4x4 filter, up 2 or down 2) and the one-axis passes of a 1-D filter take the specialised paths below.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops_checks.h"

namespace fewshot {

// ---- fast paths: a TxT filter with (up, down) = (1, 2), (2, 1) or (1, 1) on both axes -----------
// StyleGAN2's resampling ([1,3,3,1] as a 4x4 filter, down 2 in the discriminator, up 2 in the
// generator, and each one's adjoint in the backward) runs here. One (batch, channel) plane at a time:
// the plane is first copied, zero-padded, into a per-thread buffer in opmath_t, so the inner loops
// have no bounds checks, a compile-time tap count, and run along contiguous output rows (vectorized).
// The meaning is the same as the generic loop below (and upfirdn2d_ref.py); only the summation order
// of the taps differs.

template <int T, typename scalar_t, typename opmath_t>
void down2_plane(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const opmath_t* g_in,
                 const UpfirdnShape& s, int64_t px0, int64_t py0, std::vector<opmath_t>& buf) {
  // Output (oy, ox) reads padded positions (2 oy + j, 2 ox + i). Each padded row r is stored as its
  // even columns (phase 0) then its odd columns (phase 1): padded column 2 c + p is phase p, entry c.
  constexpr int kHalf = (T + 1) / 2;
  const int64_t wh = s.out_w + kHalf - 1;
  const int64_t hp = 2 * (s.out_h - 1) + T;
  buf.assign(hp * 2 * wh, opmath_t(0));
  for (int64_t r = 0; r < hp; ++r) {
    const int64_t iy = r - py0;
    if (iy < 0 || iy >= s.in_h) continue;
    const scalar_t* xr = x + iy * s.in_w;
    opmath_t* dst = buf.data() + r * 2 * wh;
    // Input column ix lands at padded column ix + px0.
    const int64_t ix0 = std::max<int64_t>(0, -px0);
    const int64_t ix1 = std::min<int64_t>(s.in_w, 2 * wh - px0);
    for (int64_t ix = ix0; ix < ix1; ++ix) {
      const int64_t pc = ix + px0;
      dst[(pc & 1) * wh + (pc >> 1)] = opmath_t(xr[ix]);
    }
  }
  opmath_t g[T * T];
  for (int k = 0; k < T * T; ++k) g[k] = g_in[k];
  for (int64_t oy = 0; oy < s.out_h; ++oy) {
    const opmath_t* rows = buf.data() + 2 * oy * 2 * wh;
    scalar_t* __restrict__ yr = y + oy * s.out_w;
    for (int64_t ox = 0; ox < s.out_w; ++ox) {
      opmath_t acc = 0;
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 16
        for (int i = 0; i < T; ++i) acc += g[j * T + i] * rows[j * 2 * wh + (i & 1) * wh + (i >> 1) + ox];
      }
      yr[ox] = scalar_t(acc);
    }
  }
}

template <int T, typename scalar_t, typename opmath_t>
void up2_plane(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const opmath_t* g,
               const UpfirdnShape& s, int64_t px0, int64_t py0, std::vector<opmath_t>& buf) {
  static_assert(T % 2 == 0, "up2_plane needs an even tap count (T / 2 taps per phase)");
  constexpr int kHalf = T / 2;
  // Output o reads upsampled position o + t - pad for tap t; it holds input pixel (o + t - pad) / 2
  // when that is even. The buffer holds input rows [rlo, rhi] and columns [clo, chi], zero outside.
  const int64_t rlo = floor_div(-py0, 2), rhi = floor_div(s.out_h - 1 + T - 1 - py0, 2);
  const int64_t clo = floor_div(-px0, 2), chi = floor_div(s.out_w - 1 + T - 1 - px0, 2);
  const int64_t hb = rhi - rlo + 1, wb = chi - clo + 1;
  buf.assign(hb * wb, opmath_t(0));
  {
    const int64_t iy0 = std::max<int64_t>(0, rlo), iy1 = std::min<int64_t>(s.in_h, rhi + 1);
    const int64_t ix0 = std::max<int64_t>(0, clo), ix1 = std::min<int64_t>(s.in_w, chi + 1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const scalar_t* xr = x + iy * s.in_w;
      opmath_t* dst = buf.data() + (iy - rlo) * wb - clo;
      for (int64_t ix = ix0; ix < ix1; ++ix) dst[ix] = opmath_t(xr[ix]);
    }
  }
  // Columns: output 2 m + p uses taps i0[p] + 2 q (q < kHalf) reading buffer column m + off[p] + q.
  int64_t i0[2], off[2];
  for (int p = 0; p < 2; ++p) {
    i0[p] = (px0 - p) - floor_div(px0 - p, 2) * 2;
    off[p] = (p + i0[p] - px0) / 2 - clo;
  }
  const int64_t pairs = s.out_w / 2;
  const bool odd_w = (s.out_w & 1) != 0;
  for (int64_t oy = 0; oy < s.out_h; ++oy) {
    // Rows: taps j0 + 2 k (k < kHalf) read input row (oy + j0 + 2 k - py0) / 2.
    const int64_t j0 = (py0 - oy) - floor_div(py0 - oy, 2) * 2;
    const int64_t r0 = (oy + j0 - py0) / 2 - rlo;
    const opmath_t* rows[kHalf];
    opmath_t ge[kHalf][kHalf], go[kHalf][kHalf];
    for (int k = 0; k < kHalf; ++k) {
      rows[k] = buf.data() + (r0 + k) * wb;
      for (int q = 0; q < kHalf; ++q) {
        ge[k][q] = g[(j0 + 2 * k) * T + i0[0] + 2 * q];
        go[k][q] = g[(j0 + 2 * k) * T + i0[1] + 2 * q];
      }
    }
    scalar_t* __restrict__ yr = y + oy * s.out_w;
    const int64_t oe = off[0], oo = off[1];
    for (int64_t m = 0; m < pairs; ++m) {
      opmath_t a = 0, b = 0;
#pragma GCC unroll 16
      for (int k = 0; k < kHalf; ++k) {
#pragma GCC unroll 16
        for (int q = 0; q < kHalf; ++q) {
          a += ge[k][q] * rows[k][m + oe + q];
          b += go[k][q] * rows[k][m + oo + q];
        }
      }
      yr[2 * m] = scalar_t(a);
      yr[2 * m + 1] = scalar_t(b);
    }
    if (odd_w) {
      opmath_t a = 0;
      for (int k = 0; k < kHalf; ++k)
        for (int q = 0; q < kHalf; ++q) a += ge[k][q] * rows[k][pairs + oe + q];
      yr[2 * pairs] = scalar_t(a);
    }
  }
}

// A TxT filter with no resampling (the generator's blur after its transposed convolution, and the
// adjoints of the down-2 and up-2 paths' padding): output (oy, ox) reads padded (oy + j, ox + i).
template <int T, typename scalar_t, typename opmath_t>
void fir_plane(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const opmath_t* g_in,
               const UpfirdnShape& s, int64_t px0, int64_t py0, std::vector<opmath_t>& buf) {
  const int64_t hp = s.out_h + T - 1, wp = s.out_w + T - 1;
  buf.assign(hp * wp, opmath_t(0));
  const int64_t ix0 = std::max<int64_t>(0, -px0), ix1 = std::min<int64_t>(s.in_w, wp - px0);
  for (int64_t r = 0; r < hp; ++r) {
    const int64_t iy = r - py0;
    if (iy < 0 || iy >= s.in_h) continue;
    const scalar_t* xr = x + iy * s.in_w;
    opmath_t* dst = buf.data() + r * wp + px0;
    for (int64_t ix = ix0; ix < ix1; ++ix) dst[ix] = opmath_t(xr[ix]);
  }
  opmath_t g[T * T];
  for (int k = 0; k < T * T; ++k) g[k] = g_in[k];
  for (int64_t oy = 0; oy < s.out_h; ++oy) {
    const opmath_t* rows = buf.data() + oy * wp;
    scalar_t* __restrict__ yr = y + oy * s.out_w;
    for (int64_t ox = 0; ox < s.out_w; ++ox) {
      opmath_t acc = 0;
#pragma GCC unroll 16
      for (int j = 0; j < T; ++j) {
#pragma GCC unroll 16
        for (int i = 0; i < T; ++i) acc += g[j * T + i] * rows[j * wp + ox + i];
      }
      yr[ox] = scalar_t(acc);
    }
  }
}

// ---- one-axis passes: a 1 x T filter along x, or a T x 1 filter along y, any up / down / padding -------
// A 1-D filter runs as two such passes (upfirdn2d_compiled.py), as ADA's 12-tap wavelet resampling does.
// Each output sums all T taps in tap order over a zero-inserted, padded copy of its input line; the taps
// that land on inserted zeros or padding add exact zeros, so the sums equal the generic loop's (which
// visits only the real taps, in the same order) bit for bit, in runs the compiler vectorises.

// Along x: each output row from one input row. `line` is the row upsampled and padded (position q holds
// input (q - px0) / up where that is a whole in-range index, else 0), split into `down` phases so that
// output o, tap k reads phase k % down at o + k / down: contiguous for every k.
template <typename scalar_t, typename opmath_t>
void pass_x_rows(const scalar_t* __restrict__ xp, scalar_t* __restrict__ yp, const opmath_t* g, const UpfirdnShape& s,
                 int64_t up, int64_t down, int64_t px0, int64_t begin, int64_t end) {
  const int64_t T = s.taps_x, span = (s.out_w - 1) * down + T;  // upsampled positions read
  constexpr int kBlock = 16;
  const int64_t phase_len = (span + down - 1) / down + kBlock;
  std::vector<opmath_t> phases(down * phase_len);
  for (int64_t row = begin; row < end; ++row) {
    const scalar_t* xr = xp + row * s.in_w;
    std::fill(phases.begin(), phases.end(), opmath_t(0));
    // Input ix lands at q = ix * up + px0, phase q % down, entry q / down: stepped, not divided, per pixel.
    int64_t ix = px0 >= 0 ? 0 : (-px0 + up - 1) / up;
    int64_t q = ix * up + px0, phase = q % down, entry = q / down;
    for (; ix < s.in_w && q < span; ++ix) {
      phases[phase * phase_len + entry] = opmath_t(xr[ix]);
      q += up;
      for (phase += up; phase >= down; phase -= down) ++entry;
    }
    // Blocks of kBlock outputs stay in registers over all T taps (the phases have kBlock of slack).
    scalar_t* __restrict__ yr = yp + row * s.out_w;
    for (int64_t o0 = 0; o0 < s.out_w; o0 += kBlock) {
      opmath_t a[kBlock] = {};
      for (int64_t k = 0; k < T; ++k) {
        const opmath_t gk = g[k];
        const opmath_t* __restrict__ src = phases.data() + (k % down) * phase_len + k / down + o0;
#pragma GCC unroll 16
        for (int j = 0; j < kBlock; ++j) a[j] += gk * src[j];
      }
      const int64_t n = std::min<int64_t>(kBlock, s.out_w - o0);
      for (int64_t j = 0; j < n; ++j) yr[o0 + j] = scalar_t(a[j]);
    }
  }
}

// Along y: output row oy of a plane sums tap k times input row (oy * down + k - py0) / up where that is a
// whole in-range index; the other taps would add rows of zeros and are skipped.
template <typename scalar_t, typename opmath_t>
void pass_y_rows(const scalar_t* __restrict__ xp, scalar_t* __restrict__ yp, const opmath_t* g, const UpfirdnShape& s,
                 int64_t up, int64_t down, int64_t py0, int64_t begin, int64_t end) {
  std::vector<opmath_t> acc(s.out_w);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t plane = row / s.out_h, oy = row - plane * s.out_h;
    const scalar_t* x_plane = xp + plane * s.in_h * s.in_w;
    std::fill(acc.begin(), acc.end(), opmath_t(0));
    for (int64_t k = 0; k < s.taps_y; ++k) {
      const int64_t q = oy * down + k - py0;
      if (q < 0 || q % up != 0 || q / up >= s.in_h) continue;
      const opmath_t gk = g[k];
      const scalar_t* __restrict__ xr = x_plane + (q / up) * s.in_w;
      opmath_t* __restrict__ a = acc.data();
      for (int64_t i = 0; i < s.out_w; ++i) a[i] += gk * opmath_t(xr[i]);
    }
    scalar_t* __restrict__ yr = yp + row * s.out_w;
    for (int64_t i = 0; i < s.out_w; ++i) yr[i] = scalar_t(acc[i]);
  }
}

// ---- the specialised paths, once as built (SSE2 on any x86-64) and once for AVX2 + FMA -----------------
// Each path is a loop of multiply-adds along contiguous rows that the compiler vectorises; the clone below
// is the same code compiled for AVX2 + FMA (twice the lanes, fused multiply-adds), taken for float32 when the
// CPU has them (checked once, at run time), as filtered_lrelu.cpp does.
enum class Path { kDown2, kUp2, kFir, kAlongX, kAlongY };
constexpr int kFastTaps = 4;

struct PathArgs {
  Path path;
  int64_t up, down, pad0;  // pad0: px0 along x, py0 along y; the 4x4 paths take px0 and py0 below
  int64_t px0, py0;
};

template <typename scalar_t, typename opmath_t>
__attribute__((always_inline)) inline void run_path(const PathArgs& p, const scalar_t* xp, scalar_t* yp,
                                                    const opmath_t* gp, const UpfirdnShape& s, int64_t begin,
                                                    int64_t end) {
  if (p.path == Path::kAlongX) return pass_x_rows(xp, yp, gp, s, p.up, p.down, p.pad0, begin, end);
  if (p.path == Path::kAlongY) return pass_y_rows(xp, yp, gp, s, p.up, p.down, p.pad0, begin, end);
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  std::vector<opmath_t> buf;
  for (int64_t plane = begin; plane < end; ++plane) {
    const scalar_t* x = xp + plane * in_plane;
    scalar_t* y = yp + plane * out_plane;
    if (p.path == Path::kDown2) down2_plane<kFastTaps>(x, y, gp, s, p.px0, p.py0, buf);
    else if (p.path == Path::kFir) fir_plane<kFastTaps>(x, y, gp, s, p.px0, p.py0, buf);
    else up2_plane<kFastTaps>(x, y, gp, s, p.px0, p.py0, buf);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"), flatten)) void run_path_avx2(const PathArgs& p, const float* xp, float* yp,
                                                                const float* gp, const UpfirdnShape& s,
                                                                int64_t begin, int64_t end) {
  run_path<float, float>(p, xp, yp, gp, s, begin, end);
}

bool use_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename scalar_t, typename opmath_t>
void run_path_best(const PathArgs& p, const scalar_t* xp, scalar_t* yp, const opmath_t* gp, const UpfirdnShape& s,
                   int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<opmath_t, float>) {
    if (use_avx2_fma()) return run_path_avx2(p, xp, yp, gp, s, begin, end);
  }
#endif
  run_path(p, xp, yp, gp, s, begin, end);
}

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
    const bool same_axes = upx == upy && downx == downy && s.taps_x == kFastTaps && s.taps_y == kFastTaps;
    const int64_t rows = s.batch_channels * s.out_h;
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / s.out_w);
    PathArgs p{Path::kFir, 1, 1, 0, px0, py0};
    bool special = true;
    if (same_axes && upx == 1 && downx == 2) p.path = Path::kDown2;
    else if (same_axes && upx == 2 && downx == 1) p.path = Path::kUp2;
    else if (same_axes && upx == 1 && downx == 1) p.path = Path::kFir;
    // A pass along one axis (the other is the identity: one tap, no resampling, no padding).
    else if (s.taps_y == 1 && upy == 1 && downy == 1 && py0 == 0 && py1 == 0) p = {Path::kAlongX, upx, downx, px0, px0, py0};
    else if (s.taps_x == 1 && upx == 1 && downx == 1 && px0 == 0 && px1 == 0) p = {Path::kAlongY, upy, downy, py0, px0, py0};
    else special = false;
    if (special) {
      const bool by_rows = p.path == Path::kAlongX || p.path == Path::kAlongY;  // else by (batch, channel) planes
      at::parallel_for(0, by_rows ? rows : s.batch_channels, by_rows ? grain : 1, [&](int64_t begin, int64_t end) {
        run_path_best(p, xp, yp, gp, s, begin, end);
      });
      return;
    }
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
