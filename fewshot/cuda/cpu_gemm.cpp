// Batched float32 matrix product with AVX-512 for the CPU Winograd convolutions: C[p] = A[p] B[p].
// cpu_matmul.py defines it as torch.bmm and decides where it runs instead of MKL.
//
// Why it exists: MKL picks its kernels by CPU vendor and runs AVX2 on AMD CPUs even where they have AVX-512.
// On Zen 5, whose FMA units are 512 bits wide, that is half the hardware's multiply-add rate: MKL's sgemm
// reaches 57 GMAC/s on one core, oneDNN's AVX-512 convolutions 130. This kernel runs the Winograd GEMM shapes
// ([36, O, C] x [36, C, tiles] and the two products of its backward) at 1.3-2x MKL's rate there.
//
// The layout is the textbook one for a register-blocked GEMM (Goto's): for each k-block of KC, a panel of A
// is packed into MR-row slivers, a panel of B into NR-column slivers (both k-major, zero-padded to whole
// slivers), and a micro-kernel keeps an MR x NR tile of C in 24 zmm registers, adding one broadcast
// element of A times two 16-lane rows of B per step. Packing reads any strides, so the transposed
// operands of the backward (b^T, a^T) cost no copies. Each panel of 512 columns of each batch entry is computed by
// one thread in a fixed order, so the result does not depend on the thread count, unlike MKL's.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FEWSHOT_GEMM_AVX512 1  // elsewhere (ARM, other compilers) the kernel is absent and MKL/torch multiplies
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fewshot {
namespace {
#ifdef FEWSHOT_GEMM_AVX512

constexpr int64_t kMR = 12;   // rows of the register tile: 12 x 2 accumulators + 2 rows of B + 1 broadcast <= 32 zmm
constexpr int64_t kNR = 32;   // columns: two 16-lane vectors
constexpr int64_t kKC = 256;  // k-block: an MR x KC sliver of A (12 KB) and a KC x NR sliver of B (32 KB) fit L1+L2
constexpr int64_t kNC = 512;  // columns of B packed at once: KC x NC = 512 KB, within a core's L2
constexpr int64_t kMC = 144;  // rows of A packed at once: MC x KC = 144 KB, beside B's panel in L2

// tile (kMR x kNR, row stride ldc) = (accumulate ? tile : 0) + a_sliver (kc x kMR) * b_sliver (kc x kNR)
__attribute__((target("avx512f,fma"))) inline void micro_kernel(int64_t kc, const float* __restrict a,
                                                                 const float* __restrict b, float* tile, int64_t ldc,
                                                                 bool accumulate) {
  __m512 acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kMR;
    b += kNR;
  }
  for (int i = 0; i < kMR; ++i) {
    float* row = tile + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(row));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(row + 16));
    }
    _mm512_storeu_ps(row, acc[i][0]);
    _mm512_storeu_ps(row + 16, acc[i][1]);
  }
}

// A[i, p] at a[i * sm + p * sk], rows [0, m), k [0, kc) -> ceil(m / kMR) slivers of [kc][kMR].
void pack_a(const float* a, int64_t sm, int64_t sk, int64_t m, int64_t kc, float* out) {
  for (int64_t i0 = 0; i0 < m; i0 += kMR, out += kc * kMR) {
    const int64_t rows = std::min(kMR, m - i0);
    if (sm == 1) {  // columns of A contiguous (the transposed operand): copy a sliver's column per step
      for (int64_t p = 0; p < kc; ++p) {
        std::memcpy(out + p * kMR, a + i0 + p * sk, rows * sizeof(float));
        std::fill(out + p * kMR + rows, out + (p + 1) * kMR, 0.f);
      }
      continue;
    }
    for (int64_t i = 0; i < rows; ++i) {  // along each row of A: contiguous reads where rows are (sk == 1)
      const float* src = a + (i0 + i) * sm;
      for (int64_t p = 0; p < kc; ++p) out[p * kMR + i] = src[p * sk];
    }
    for (int64_t i = rows; i < kMR; ++i)
      for (int64_t p = 0; p < kc; ++p) out[p * kMR + i] = 0.f;
  }
}

// B[p, j] at b[p * sk + j * sn], k [0, kc), columns [0, nc) -> ceil(nc / kNR) slivers of [kc][kNR].
void pack_b(const float* b, int64_t sk, int64_t sn, int64_t kc, int64_t nc, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += kNR, out += kc * kNR) {
    const int64_t cols = std::min(kNR, nc - j0);
    if (sn == 1) {  // rows of B contiguous: copy them
      for (int64_t p = 0; p < kc; ++p) {
        std::memcpy(out + p * kNR, b + p * sk + j0, cols * sizeof(float));
        std::fill(out + p * kNR + cols, out + (p + 1) * kNR, 0.f);
      }
      continue;
    }
    for (int64_t j = 0; j < cols; ++j) {  // along each column (contiguous where sk == 1: the transposed operand)
      const float* src = b + (j0 + j) * sn;
      for (int64_t p = 0; p < kc; ++p) out[p * kNR + j] = src[p * sk];
    }
    for (int64_t j = cols; j < kNR; ++j)
      for (int64_t p = 0; p < kc; ++p) out[p * kNR + j] = 0.f;
  }
}

struct Operand {
  const float* data;
  int64_t row_stride, col_stride;
};

// c (m x n, row stride ldc) = a (m x k) b (k x n); a_pack and b_pack are this thread's packing buffers.
__attribute__((target("avx512f,fma"))) void gemm(Operand a, Operand b, float* c, int64_t ldc, int64_t m, int64_t n,
                                                 int64_t k, float* a_pack, float* b_pack) {
  alignas(64) float edge[kMR * kNR];
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return;
  }
  // With m <= kMC (every Winograd shape up to 144 channels) A's panel is packed once per k-block; larger m packs
  // it per (k-block, row block). n <= kNC when called for one task's panel.
  const bool a_once = m <= kMC;
  for (int64_t pc = 0; pc < k; pc += kKC) {
    const int64_t kc = std::min(kKC, k - pc);
    const bool accumulate = pc > 0;
    if (a_once) pack_a(a.data + pc * a.col_stride, a.row_stride, a.col_stride, m, kc, a_pack);
    for (int64_t jc = 0; jc < n; jc += kNC) {
      const int64_t nc = std::min(kNC, n - jc);
      pack_b(b.data + pc * b.row_stride + jc * b.col_stride, b.row_stride, b.col_stride, kc, nc, b_pack);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        if (!a_once) pack_a(a.data + ic * a.row_stride + pc * a.col_stride, a.row_stride, a.col_stride, mc, kc, a_pack);
        for (int64_t jr = 0; jr < nc; jr += kNR) {  // one B sliver stays in L1 while the block's A slivers pass it
          const int64_t cols = std::min(kNR, nc - jr);
          const float* b_sliver = b_pack + (jr / kNR) * kc * kNR;
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int64_t rows = std::min(kMR, mc - ir);
            const float* a_sliver = a_pack + (ir / kMR) * kc * kMR;
            float* tile = c + (ic + ir) * ldc + jc + jr;
            if (rows == kMR && cols == kNR) {
              micro_kernel(kc, a_sliver, b_sliver, tile, ldc, accumulate);
              continue;
            }
            micro_kernel(kc, a_sliver, b_sliver, edge, kNR, false);  // a partial tile: through a full-size buffer
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t j = 0; j < cols; ++j)
                tile[i * ldc + j] = (accumulate ? tile[i * ldc + j] : 0.f) + edge[i * kNR + j];
          }
        }
      }
    }
  }
}

#endif  // FEWSHOT_GEMM_AVX512
}  // namespace

bool bmm_avx512_supported() {
#ifdef FEWSHOT_GEMM_AVX512
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

at::Tensor bmm_avx512_cpu(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(bmm_avx512_supported(), "bmm_avx512: this CPU has no AVX-512");
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "bmm_avx512: CPU tensors only");
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat, "bmm_avx512: float32 only, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1),
              "bmm_avx512: shapes ", a.sizes(), " and ", b.sizes(), " do not multiply as [P, m, k] x [P, k, n]");
  [[maybe_unused]] const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  at::Tensor c = at::empty({batch, m, n}, a.options());
  if (c.numel() == 0) return c;
#ifdef FEWSHOT_GEMM_AVX512
  const float* a_data = a.data_ptr<float>();
  const float* b_data = b.data_ptr<float>();
  float* c_data = c.data_ptr<float>();
  const int64_t a_pack_size = (std::min(m, kMC) + kMR - 1) / kMR * kMR * kKC;
  const int64_t b_pack_size = kKC * ((kNC + kNR - 1) / kNR * kNR);
  // A task is one batch entry's panel of kNC columns of C: enough tasks for many threads (36 entries x up to 4
  // panels at the Winograd shapes), each C entry summed by one task in one order whatever the thread count.
  const int64_t panels = (n + kNC - 1) / kNC;
  at::parallel_for(0, batch * panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a_pack(a_pack_size), b_pack(b_pack_size);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / panels, jc = task % panels * kNC;
      gemm({a_data + p * a.stride(0), a.stride(1), a.stride(2)},
           {b_data + p * b.stride(0) + jc * b.stride(2), b.stride(1), b.stride(2)}, c_data + p * m * n + jc, n, m,
           std::min(kNC, n - jc), k, a_pack.data(), b_pack.data());
    }
  });
#endif
  return c;
}

}  // namespace fewshot
