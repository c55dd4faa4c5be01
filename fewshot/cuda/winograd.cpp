// Winograd F(4x4, 3x3) transforms on the CPU (winograd_ref.py defines them in plain PyTorch).
//
// A 3x3 stride-1 convolution with padding 1 is computed per 4x4 output tile as
// out = A^T [ (G g G^T) . (B^T d B) ] A, d the 6x6 input tile around it: 36 matrix products of
// [O, C] x [C, tiles] instead of 9 of [O, C] x [C, pixels], 4x fewer multiply-adds, in GEMMs torch
// runs at the machine's peak. The kernels here are the linear maps around those GEMMs and their
// adjoints (the backward of each is the other one), each one pass over memory:
//   input      x [N, C, H, W]          -> V [36, C, N*TH*TW]   (zero padding 1, 6x6 tiles at stride 4)
//   input_t    V [36, C, N*TH*TW]      -> x [N, C, H, W]       (adjoint: overlapping tiles summed)
//   output     M [36, O, N*TH*TW]      -> y [N, O, H, W]       (4x4 tiles, cropped at the edges)
//   output_t   y [N, O, H, W]          -> M [36, O, N*TH*TW]   (adjoint)
//   weight     w [O, C, 3, 3]          -> U [36, O, C]         (G g G^T per filter)
//   weight_t   U [36, O, C]            -> w [O, C, 3, 3]       (adjoint)
// TH = ceil(H / 4), TW = ceil(W / 4). Each (batch, channel) plane belongs to one thread, so the
// adjoint's overlapping tiles accumulate without atomics. The planes are visited channel by channel,
// images innermost (kChannelMajor): plane (n, c)'s 36 runs in V / M sit right after those of
// (n - 1, c), so the 36 streams each advance contiguously instead of jumping a channel's worth of
// tiles (a new page per run) at every plane. The matrices are compile-time constants;
// the fully unrolled products below drop their zero terms. Float32 has its own kernels that work on
// four tiles (or filters) per step in 4-lane vectors; the generic ones serve float64.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ops_checks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEWSHOT_STREAM_STORES 1
#endif

namespace fewshot {
namespace {

constexpr int kIn = 6, kOut = 4, kTaps = kIn * kIn;

constexpr double kBT[kIn][kIn] = {
    {4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
constexpr double kG[kIn][3] = {
    {1. / 4, 0, 0}, {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
    {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1},
};
constexpr double kAT[kOut][kIn] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1},
};

// The kernels work on one row of tiles at a time, with the tile index innermost: each step below is
// "out row r = sum_k L[r][k] * in row k" over runs of TW values, a loop the compiler vectorises,
// and V / M are read and written in contiguous runs of TW. The strided part (tiles overlap by 2
// pixels, and sit 4 apart) is confined to a scalar (de)interleave of each image row.

// out[r * os + t] = sum_k L[r][k] in[k * is + t] for t < len (L[k][r] when transposed): rows of runs.
template <int R, int K, bool kTransposed, int LR, int LC, typename T>
inline void combine(const double (&L)[LR][LC], const T* in, int64_t is, T* out, int64_t os, int64_t len) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    T* o = out + r * os;
    for (int64_t t = 0; t < len; ++t) {
      T acc = T(0);
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        const double coef = kTransposed ? L[k][r] : L[r][k];
        if (coef != 0) acc += T(coef) * in[k * is + t];
      }
      o[t] = acc;
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

// Per-thread scratch: one padded image row, the tile columns of a row of tiles, two stages of
// transformed values (6 x 6 runs of TW each).
template <typename T>
struct Scratch {
  std::vector<T> row, cols, a, b;
  explicit Scratch(const Tiles& t)
      : row(kOut * t.tw + 2), cols(kIn * t.tw), a(kTaps * t.tw), b(kTaps * t.tw) {}
};

// cols[i][tx] = x[iy][4 tx + i - 1] (zero outside the image), i < kIn: the 6 columns of each tile.
template <typename T>
inline void gather_columns(const T* x_row, const Tiles& t, Scratch<T>& s) {
  T* row = s.row.data();  // row[q] = x[q - 1]
  std::fill(s.row.begin(), s.row.end(), T(0));
  std::copy(x_row, x_row + t.w, row + 1);
  for (int i = 0; i < kIn; ++i) {
    T* c = s.cols.data() + i * t.tw;
    const int64_t last = std::min<int64_t>(t.tw, (static_cast<int64_t>(s.row.size()) - 1 - i) / kOut + 1);
    for (int64_t tx = 0; tx < last; ++tx) c[tx] = row[kOut * tx + i];
    for (int64_t tx = last; tx < t.tw; ++tx) c[tx] = T(0);
  }
}

template <typename scalar_t>
void input_kernel(const scalar_t* x, scalar_t* v, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();  // distance between the 36 transformed planes
  const int64_t tw = t.tw;
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    Scratch<scalar_t> s(t);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const scalar_t* xp = x + (n * t.c + ch) * t.h * t.w;
      scalar_t* out = v + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // a[j][i'] = (d B)[j][i'] for the 6 input rows j of this row of tiles.
        for (int j = 0; j < kIn; ++j) {
          const int64_t iy = kOut * ty - 1 + j;
          scalar_t* aj = s.a.data() + j * kIn * tw;
          if (iy < 0 || iy >= t.h) {
            std::fill(aj, aj + kIn * tw, scalar_t(0));
            continue;
          }
          gather_columns(xp + iy * t.w, t, s);
          combine<kIn, kIn, false>(kBT, s.cols.data(), tw, aj, tw, tw);
        }
        // V[j'][i'] = sum_j BT[j'][j] a[j][i'], written straight into the 36 planes.
        for (int i = 0; i < kIn; ++i) {
          combine<kIn, kIn, false>(kBT, s.a.data() + i * tw, kIn * tw, out + i * stride_k + ty * tw,
                                   kIn * stride_k, tw);
        }
      }
    }
  });
}

template <typename scalar_t>
void input_t_kernel(const scalar_t* v, scalar_t* x, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const int64_t tw = t.tw, padded_w = kOut * tw + 2;
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    Scratch<scalar_t> s(t);
    // The padded plane the overlapping tiles accumulate into: acc[q][p] = x[q - 1][p - 1].
    std::vector<scalar_t> acc((kOut * t.th + 2) * padded_w);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const scalar_t* in = v + ch * t.count() + n * t.per_image();
      std::fill(acc.begin(), acc.end(), scalar_t(0));
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // a[j][i'] = sum_j' BT[j'][j] V[j'][i'], then b[j][i] = sum_i' a[j][i'] BT[i'][i].
        for (int i = 0; i < kIn; ++i) {
          combine<kIn, kIn, true>(kBT, in + i * stride_k + ty * tw, kIn * stride_k, s.a.data() + i * tw,
                                  kIn * tw, tw);
        }
        for (int j = 0; j < kIn; ++j) {
          combine<kIn, kIn, true>(kBT, s.a.data() + j * kIn * tw, tw, s.b.data() + j * kIn * tw, tw, tw);
          scalar_t* row = acc.data() + (kOut * ty + j) * padded_w;
          for (int i = 0; i < kIn; ++i) {
            const scalar_t* bji = s.b.data() + (j * kIn + i) * tw;
            for (int64_t tx = 0; tx < tw; ++tx) row[kOut * tx + i] += bji[tx];
          }
        }
      }
      scalar_t* xp = x + (n * t.c + ch) * t.h * t.w;
      for (int64_t iy = 0; iy < t.h; ++iy) {
        const scalar_t* row = acc.data() + (iy + 1) * padded_w + 1;
        std::copy(row, row + t.w, xp + iy * t.w);
      }
    }
  });
}

template <typename scalar_t>
void output_kernel(const scalar_t* m, scalar_t* y, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();  // here t.c is the output channel count
  const int64_t tw = t.tw;
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    Scratch<scalar_t> s(t);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      scalar_t* yp = y + (n * t.c + ch) * t.h * t.w;
      const scalar_t* in = m + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // a[j][i'] = sum_j' AT[j][j'] M[j'][i'] (4 x 6 runs), then b[j][i] = sum_i' a[j][i'] AT[i][i'].
        for (int i = 0; i < kIn; ++i) {
          combine<kOut, kIn, false>(kAT, in + i * stride_k + ty * tw, kIn * stride_k, s.a.data() + i * tw,
                                    kIn * tw, tw);
        }
        const int64_t oy = kOut * ty;
        const int rows = static_cast<int>(std::min<int64_t>(kOut, t.h - oy));
        for (int j = 0; j < rows; ++j) {
          combine<kOut, kIn, false>(kAT, s.a.data() + j * kIn * tw, tw, s.b.data() + j * kOut * tw, tw, tw);
          scalar_t* out_row = yp + (oy + j) * t.w;
          for (int i = 0; i < kOut; ++i) {
            const scalar_t* bji = s.b.data() + (j * kOut + i) * tw;
            const int64_t cols = (t.w - i + kOut - 1) / kOut;  // tiles whose column i is inside the image
            for (int64_t tx = 0; tx < cols; ++tx) out_row[kOut * tx + i] = bji[tx];
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void output_t_kernel(const scalar_t* y, scalar_t* m, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const int64_t tw = t.tw;
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    Scratch<scalar_t> s(t);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const scalar_t* yp = y + (n * t.c + ch) * t.h * t.w;
      scalar_t* out = m + ch * t.count() + n * t.per_image();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // g[j][i][tx] = y[4 ty + j][4 tx + i] (zero outside), then a[j][i'] = sum_i g[j][i] AT[i][i'].
        const int64_t oy = kOut * ty;
        for (int j = 0; j < kOut; ++j) {
          scalar_t* g = s.b.data() + j * kOut * tw;
          if (oy + j >= t.h) {
            std::fill(g, g + kOut * tw, scalar_t(0));
          } else {
            const scalar_t* in_row = yp + (oy + j) * t.w;
            for (int i = 0; i < kOut; ++i) {
              const int64_t cols = (t.w - i + kOut - 1) / kOut;
              scalar_t* gi = g + i * tw;
              for (int64_t tx = 0; tx < cols; ++tx) gi[tx] = in_row[kOut * tx + i];
              for (int64_t tx = cols; tx < tw; ++tx) gi[tx] = scalar_t(0);
            }
          }
          combine<kIn, kOut, true>(kAT, g, tw, s.a.data() + j * kIn * tw, tw, tw);
        }
        // M[j'][i'] = sum_j AT[j][j'] a[j][i'], straight into the 36 planes.
        for (int i = 0; i < kIn; ++i) {
          combine<kIn, kOut, true>(kAT, s.a.data() + i * tw, kIn * tw, out + i * stride_k + ty * tw,
                                   kIn * stride_k, tw);
        }
      }
    }
  });
}

// ---- float32: four tiles per step in 4-lane vectors ----------------------------------------------
// The kernels above leave the strided part (tiles 4 pixels apart, overlapping by 2) to scalar
// (de)interleaving. In float32, the hot case, the same maps run on four tiles at once: four
// consecutive tiles' pixels are loaded as 4-lane vectors and transposed in registers, so each
// lane holds one tile and the 6x6 / 4x6 products are plain vector arithmetic. GCC/Clang vector
// extensions: SSE on x86-64, NEON on arm64, scalar code elsewhere.

typedef float f4 __attribute__((vector_size(16)));
typedef int i4 __attribute__((vector_size(16)));
constexpr int kLanes = 4;

#if defined(__clang__)
#define FEWSHOT_SHUFFLE(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define FEWSHOT_SHUFFLE(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, i4{i0, i1, i2, i3})
#endif

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store4(float* p, f4 v) { std::memcpy(p, &v, sizeof(v)); }

// Rows a, b, c, d become columns: afterwards a = {a0, b0, c0, d0}, b = {a1, b1, c1, d1}, ...
inline void transpose4(f4& a, f4& b, f4& c, f4& d) {
  const f4 t0 = FEWSHOT_SHUFFLE(a, b, 0, 4, 1, 5), t1 = FEWSHOT_SHUFFLE(a, b, 2, 6, 3, 7);
  const f4 t2 = FEWSHOT_SHUFFLE(c, d, 0, 4, 1, 5), t3 = FEWSHOT_SHUFFLE(c, d, 2, 6, 3, 7);
  a = FEWSHOT_SHUFFLE(t0, t2, 0, 1, 4, 5);
  b = FEWSHOT_SHUFFLE(t0, t2, 2, 3, 6, 7);
  c = FEWSHOT_SHUFFLE(t1, t3, 0, 1, 4, 5);
  d = FEWSHOT_SHUFFLE(t1, t3, 2, 3, 6, 7);
}

// out[r] = sum_k L[r][k] in[k] (L[k][r] when transposed) on vectors; zero coefficients drop out.
template <int R, int K, bool kTransposed, int LR, int LC>
inline void apply(const double (&L)[LR][LC], const f4* in, f4* out) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    f4 acc = {0, 0, 0, 0};
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      const double coef = kTransposed ? L[k][r] : L[r][k];
      if (coef != 0) acc += in[k] * static_cast<float>(coef);
    }
    out[r] = acc;
  }
}

// Stores lanes [0, count) of v (count < 4 only at the right edge).
inline void store_lanes(float* p, f4 v, int64_t count) {
  if (count >= kLanes) {
    store4(p, v);
    return;
  }
  for (int64_t l = 0; l < count; ++l) p[l] = v[l];
}

int64_t round_up(int64_t value, int64_t step) { return (value + step - 1) / step * step; }

// V and M keep each of their 36 planes C * tiles apart, a power of two at the usual sizes, so 36
// runs written (or read) in step alias to the same cache sets and evict each other. The float
// kernels therefore stage one (image, channel) plane's 36 x TH*TW values in a small buffer and copy
// each of the 36 runs in one piece.
//
// Where V or M is larger than a core's L2, the 36 runs go out as streaming (non-temporal) stores:
// whole cache lines straight to memory, without first reading each line in for ownership. The
// GEMM that reads them next would find most of them evicted anyway. Measured on a 2-core Xeon
// (AVX-512), one training iteration interleaved A/B: 32 px (cb 2048, cm 128, batch 16) 5% faster,
// 64 px small (cb 8192, cm 256, batch 8) 3% faster; the input transform alone 10-20%, output_t 20-30%.
// The values written are the same either way.
constexpr int64_t kStreamMinBytes = int64_t(4) << 20;

inline bool streams(const Tiles& t, int64_t run, int64_t stride_k) {
#ifdef FEWSHOT_STREAM_STORES
  return kTaps * t.c * t.count() * int64_t(sizeof(float)) >= kStreamMinBytes && run % 16 == 0 && stride_k % 16 == 0;
#else
  (void)t, (void)run, (void)stride_k;
  return false;
#endif
}

// dst must be 64-byte aligned when `stream` (every run then starts a cache line: run and stride_k
// are multiples of 16 floats).
inline void stage_out(const float* stage, float* dst, int64_t run, int64_t stride_k, bool stream) {
#ifdef FEWSHOT_STREAM_STORES
  if (stream) {
    for (int k = 0; k < kTaps; ++k) {
      float* d = dst + k * stride_k;
      const float* s = stage + k * run;
      for (int64_t i = 0; i < run; i += 4) _mm_stream_ps(d + i, _mm_loadu_ps(s + i));
    }
    return;
  }
#endif
  (void)stream;
  for (int k = 0; k < kTaps; ++k) std::memcpy(dst + k * stride_k, stage + k * run, run * sizeof(float));
}

// Streaming stores are weakly ordered: fence them before the thread's part is reported done.
inline void stream_fence(bool stream) {
#ifdef FEWSHOT_STREAM_STORES
  if (stream) _mm_sfence();
#endif
  (void)stream;
}
inline void stage_in(const float* src, float* stage, int64_t run, int64_t stride_k) {
  for (int k = 0; k < kTaps; ++k) std::memcpy(stage + k * run, src + k * stride_k, run * sizeof(float));
}

void input_kernel(const float* x, float* v, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const bool stream = streams(t, t.per_image(), stride_k) && reinterpret_cast<uintptr_t>(v) % 64 == 0;
  const int64_t tw = t.tw, tw4 = round_up(tw, kLanes);
  const int64_t row_len = kOut * tw4 + kLanes;  // r[p] = x[.][p - 1], zero outside, room for one more tile
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(kIn * row_len, 0.f), edge(kIn * t.w), stage(kTaps * t.per_image());
    const int64_t ps = t.per_image();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const float* xp = x + (n * t.c + ch) * t.h * t.w;
      float* out = stage.data();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // Rows of B^T d: rows[j'][p] = sum_j BT[j'][j] x[4 ty - 1 + j][p - 1], on whole image rows.
        const int64_t y0 = kOut * ty - 1;
        const float* src = xp + y0 * t.w;
        if (y0 < 0 || y0 + kIn > t.h) {  // top or bottom edge: zero rows outside the image
          for (int j = 0; j < kIn; ++j) {
            const int64_t iy = y0 + j;
            float* e = edge.data() + j * t.w;
            if (iy >= 0 && iy < t.h) std::copy(xp + iy * t.w, xp + (iy + 1) * t.w, e);
            else std::fill(e, e + t.w, 0.f);
          }
          src = edge.data();
        }
        combine<kIn, kIn, false>(kBT, src, t.w, rows.data() + 1, row_len, t.w);
        // Then (B^T d) B along each row, four tiles per step.
        for (int jr = 0; jr < kIn; ++jr) {
          const float* r = rows.data() + jr * row_len;
          float* dst = out + jr * kIn * ps + ty * tw;
          for (int64_t tx = 0; tx < tw; tx += kLanes) {
            f4 p[kIn], q[kIn];
            p[0] = load4(r + kOut * tx);
            p[1] = load4(r + kOut * tx + 4);
            p[2] = load4(r + kOut * tx + 8);
            p[3] = load4(r + kOut * tx + 12);
            transpose4(p[0], p[1], p[2], p[3]);  // p[i] = column i of tiles tx .. tx + 3
            const f4 next = load4(r + kOut * tx + 16);  // the tile after them
            p[4] = FEWSHOT_SHUFFLE(p[0], next, 1, 2, 3, 4);
            p[5] = FEWSHOT_SHUFFLE(p[1], next, 1, 2, 3, 5);
            apply<kIn, kIn, false>(kBT, p, q);
            for (int i = 0; i < kIn; ++i) store_lanes(dst + i * ps + tx, q[i], tw - tx);
          }
        }
      }
      stage_out(out, v + ch * t.count() + n * ps, ps, stride_k, stream);
    }
    stream_fence(stream);
  });
}

void output_kernel(const float* m, float* y, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const int64_t tw = t.tw, tw4 = round_up(tw, kLanes);
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kOut * kIn * tw4, 0.f), row(kOut * tw4), stage(kTaps * t.per_image());
    const int64_t ps = t.per_image();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      float* yp = y + (n * t.c + ch) * t.h * t.w;
      const float* in = stage.data();
      stage_in(m + ch * t.count() + n * ps, stage.data(), ps, stride_k);
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // a[j][i'] = sum_j' AT[j][j'] M[j'][i'] over runs of TW tiles.
        for (int i = 0; i < kIn; ++i) {
          combine<kOut, kIn, false>(kAT, in + i * ps + ty * tw, kIn * ps, a.data() + i * tw4, kIn * tw4, tw);
        }
        const int64_t oy = kOut * ty;
        const int rows = static_cast<int>(std::min<int64_t>(kOut, t.h - oy));
        for (int j = 0; j < rows; ++j) {
          const float* aj = a.data() + j * kIn * tw4;
          float* out_row = yp + (oy + j) * t.w;
          const bool whole = kOut * tw4 <= t.w;  // every group of four tiles lies inside the row
          float* dst = whole ? out_row : row.data();
          for (int64_t tx = 0; tx < tw; tx += kLanes) {
            f4 p[kIn], o[kOut];
            for (int i = 0; i < kIn; ++i) p[i] = load4(aj + i * tw4 + tx);
            apply<kOut, kIn, false>(kAT, p, o);  // o[i] = pixel i of row j of tiles tx .. tx + 3
            transpose4(o[0], o[1], o[2], o[3]);  // o[k] = the 4 pixels of tile tx + k
            for (int k = 0; k < kLanes; ++k) store4(dst + kOut * (tx + k), o[k]);
          }
          if (!whole) std::copy(row.data(), row.data() + t.w, out_row);
        }
      }
    }
  });
}

void output_t_kernel(const float* y, float* m, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const bool stream = streams(t, t.per_image(), stride_k) && reinterpret_cast<uintptr_t>(m) % 64 == 0;
  const int64_t tw = t.tw, tw4 = round_up(tw, kLanes);
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kOut * kIn * tw4, 0.f), row(kOut * tw4, 0.f), stage(kTaps * t.per_image());
    const int64_t ps = t.per_image();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const float* yp = y + (n * t.c + ch) * t.h * t.w;
      float* out = stage.data();
      for (int64_t ty = 0; ty < t.th; ++ty) {
        const int64_t oy = kOut * ty;
        for (int j = 0; j < kOut; ++j) {
          // a[j][i'] = sum_i g[j][i] AT[i][i'], g[j][i] = y[4 ty + j][4 tx + i] (zero outside).
          const float* src = row.data();
          if (oy + j >= t.h) {
            std::fill(row.begin(), row.end(), 0.f);
          } else if (kOut * tw4 <= t.w) {
            src = yp + (oy + j) * t.w;
          } else {
            std::copy(yp + (oy + j) * t.w, yp + (oy + j + 1) * t.w, row.begin());
            std::fill(row.begin() + t.w, row.end(), 0.f);
          }
          float* aj = a.data() + j * kIn * tw4;
          for (int64_t tx = 0; tx < tw; tx += kLanes) {
            f4 g[kOut], q[kIn];
            for (int k = 0; k < kLanes; ++k) g[k] = load4(src + kOut * (tx + k));
            transpose4(g[0], g[1], g[2], g[3]);  // g[i] = pixel i of tiles tx .. tx + 3
            apply<kIn, kOut, true>(kAT, g, q);
            for (int i = 0; i < kIn; ++i) store4(aj + i * tw4 + tx, q[i]);
          }
        }
        // M[j'][i'] = sum_j AT[j][j'] a[j][i'], straight into the 36 planes.
        for (int i = 0; i < kIn; ++i) {
          combine<kIn, kOut, true>(kAT, a.data() + i * tw4, kIn * tw4, out + i * ps + ty * tw, kIn * ps, tw);
        }
      }
      stage_out(out, m + ch * t.count() + n * ps, ps, stride_k, stream);
    }
    stream_fence(stream);
  });
}

void input_t_kernel(const float* v, float* x, const Tiles& t) {
  const int64_t stride_k = t.c * t.count();
  const int64_t tw = t.tw, tw4 = round_up(tw, kLanes);
  const int64_t padded_w = kOut * tw4 + kLanes;  // acc[q][p] = x[q - 1][p - 1]
  at::parallel_for(0, t.n * t.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(kIn * kIn * tw4, 0.f), acc((kOut * t.th + 2) * padded_w), stage(kTaps * t.per_image());
    const int64_t ps = t.per_image();
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t ch = plane / t.n, n = plane % t.n;  // images innermost (kChannelMajor, above)
      const float* in = stage.data();
      stage_in(v + ch * t.count() + n * ps, stage.data(), ps, stride_k);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t ty = 0; ty < t.th; ++ty) {
        // a[j][i'] = sum_j' BT[j'][j] V[j'][i'] over runs of TW tiles.
        for (int i = 0; i < kIn; ++i) {
          combine<kIn, kIn, true>(kBT, in + i * ps + ty * tw, kIn * ps, a.data() + i * tw4, kIn * tw4, tw);
        }
        for (int j = 0; j < kIn; ++j) {
          const float* aj = a.data() + j * kIn * tw4;
          float* row = acc.data() + (kOut * ty + j) * padded_w;
          for (int64_t tx = 0; tx < tw; tx += kLanes) {
            f4 p[kIn], d[kIn];
            for (int i = 0; i < kIn; ++i) p[i] = load4(aj + i * tw4 + tx);
            apply<kIn, kIn, true>(kBT, p, d);  // d[i] = column i of tiles tx .. tx + 3
            // Columns 0-3 of each tile are 4 consecutive pixels; columns 4-5 overlap the next tile.
            const f4 d4 = d[4], d5 = d[5];
            transpose4(d[0], d[1], d[2], d[3]);
            for (int k = 0; k < kLanes; ++k) store4(row + kOut * (tx + k), load4(row + kOut * (tx + k)) + d[k]);
            for (int k = 0; k < kLanes; ++k) {
              row[kOut * (tx + k) + 4] += d4[k];
              row[kOut * (tx + k) + 5] += d5[k];
            }
          }
        }
      }
      float* xp = x + (n * t.c + ch) * t.h * t.w;
      for (int64_t iy = 0; iy < t.h; ++iy) {
        const float* row = acc.data() + (iy + 1) * padded_w + 1;
        std::copy(row, row + t.w, xp + iy * t.w);
      }
    }
  });
}

// ---- Filters: U[k][o][c] = (G g G^T)[k] for g = w[o][c] (3x3), and the adjoint --------------------
// V is a vector of lanes (f4: four filters side by side) or a scalar; S its scalar type.

template <typename S, typename V>
inline void filter_tile(const V* g, V* u) {  // g: 3x3 -> u: 6x6
#pragma GCC unroll 8
  for (int i = 0; i < kIn; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < kIn; ++j) {
      V acc{};
#pragma GCC unroll 4
      for (int a = 0; a < 3; ++a) {
#pragma GCC unroll 4
        for (int b = 0; b < 3; ++b) {
          const double coef = kG[i][a] * kG[j][b];
          if (coef != 0) acc += g[a * 3 + b] * S(coef);
        }
      }
      u[i * kIn + j] = acc;
    }
  }
}

template <typename S, typename V>
inline void filter_tile_t(const V* u, V* g) {  // u: 6x6 -> g: 3x3, the adjoint of filter_tile
#pragma GCC unroll 4
  for (int a = 0; a < 3; ++a) {
#pragma GCC unroll 4
    for (int b = 0; b < 3; ++b) {
      V acc{};
#pragma GCC unroll 8
      for (int i = 0; i < kIn; ++i) {
#pragma GCC unroll 8
        for (int j = 0; j < kIn; ++j) {
          const double coef = kG[i][a] * kG[j][b];
          if (coef != 0) acc += u[i * kIn + j] * S(coef);
        }
      }
      g[a * 3 + b] = acc;
    }
  }
}

// One output channel o per task; its 36 runs of C values are staged and copied whole (see stage_out).
template <typename scalar_t>
void weight_kernel(const scalar_t* w, scalar_t* u, int64_t o_count, int64_t c_count) {
  at::parallel_for(0, o_count, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> stage(kTaps * c_count);
    for (int64_t o = begin; o < end; ++o) {
      const scalar_t* src = w + o * c_count * 9;
      int64_t c = 0;
      if constexpr (std::is_same_v<scalar_t, float>) {
        for (; c + kLanes <= c_count; c += kLanes) {
          f4 g[9], t[kTaps];
          for (int k = 0; k < 9; ++k) {
            g[k] = f4{src[c * 9 + k], src[(c + 1) * 9 + k], src[(c + 2) * 9 + k], src[(c + 3) * 9 + k]};
          }
          filter_tile<float>(g, t);
          for (int k = 0; k < kTaps; ++k) store4(stage.data() + k * c_count + c, t[k]);
        }
      }
      for (; c < c_count; ++c) {
        scalar_t t[kTaps];
        filter_tile<scalar_t>(src + c * 9, t);
        for (int k = 0; k < kTaps; ++k) stage[k * c_count + c] = t[k];
      }
      for (int k = 0; k < kTaps; ++k) {
        std::copy(stage.data() + k * c_count, stage.data() + (k + 1) * c_count, u + (k * o_count + o) * c_count);
      }
    }
  });
}

template <typename scalar_t>
void weight_t_kernel(const scalar_t* u, scalar_t* w, int64_t o_count, int64_t c_count) {
  at::parallel_for(0, o_count, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> stage(kTaps * c_count);
    for (int64_t o = begin; o < end; ++o) {
      for (int k = 0; k < kTaps; ++k) {
        const scalar_t* run = u + (k * o_count + o) * c_count;
        std::copy(run, run + c_count, stage.data() + k * c_count);
      }
      scalar_t* dst = w + o * c_count * 9;
      int64_t c = 0;
      if constexpr (std::is_same_v<scalar_t, float>) {
        for (; c + kLanes <= c_count; c += kLanes) {
          f4 t[kTaps], g[9];
          for (int k = 0; k < kTaps; ++k) t[k] = load4(stage.data() + k * c_count + c);
          filter_tile_t<float>(t, g);
          for (int l = 0; l < kLanes; ++l) {
            for (int k = 0; k < 9; ++k) dst[(c + l) * 9 + k] = g[k][l];
          }
        }
      }
      for (; c < c_count; ++c) {
        scalar_t t[kTaps], g[9];
        for (int k = 0; k < kTaps; ++k) t[k] = stage[k * c_count + c];
        filter_tile_t<scalar_t>(t, g);
        std::copy(g, g + 9, dst + c * 9);
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

namespace fewshot {

// w [O, C, 3, 3] -> U [36, O, C]
at::Tensor winograd_weight_cpu(const at::Tensor& w_in) {
  TORCH_CHECK(w_in.dim() == 4 && w_in.size(2) == 3 && w_in.size(3) == 3 && w_in.device().is_cpu(),
              "winograd_weight: w must be a [O, C, 3, 3] CPU tensor");
  const at::Tensor w = w_in.contiguous();
  at::Tensor u = at::empty({kTaps, w.size(0), w.size(1)}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "winograd_weight", [&] {
    weight_kernel(w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), w.size(0), w.size(1));
  });
  return u;
}

// U [36, O, C] -> w [O, C, 3, 3] (the adjoint of winograd_weight)
at::Tensor winograd_weight_t_cpu(const at::Tensor& u_in) {
  TORCH_CHECK(u_in.dim() == 3 && u_in.size(0) == kTaps && u_in.device().is_cpu(),
              "winograd_weight_t: U must be a [36, O, C] CPU tensor");
  const at::Tensor u = u_in.contiguous();
  at::Tensor w = at::empty({u.size(1), u.size(2), 3, 3}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "winograd_weight_t", [&] {
    weight_t_kernel(u.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), u.size(1), u.size(2));
  });
  return w;
}

}  // namespace fewshot
