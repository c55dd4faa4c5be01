// Python bindings. Built twice: without FEWSHOT_CUDA for the CPU module, with it for the CUDA
// module; both expose the same functions (winograd: CPU only) so Python uses whichever module it loaded directly.
// torch/python.h (not torch/extension.h): the Tensor casters without the whole C++ frontend,
// which more than halves the compile time of this file.
#include <torch/python.h>

namespace fewshot {
#ifdef FEWSHOT_CUDA
at::Tensor bias_act_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, double,
                         double, double);
at::Tensor upfirdn2d_cuda(const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, int64_t, bool);
std::vector<at::Tensor> filtered_lrelu_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double,
                                            bool, bool);
at::Tensor filtered_lrelu_grad_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, bool);
#define FS_IMPL(name) name##_cuda
#else
at::Tensor bias_act_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, double,
                        double, double);
at::Tensor upfirdn2d_cpu(const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, bool);
std::vector<at::Tensor> filtered_lrelu_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double,
                                           bool, bool);
at::Tensor filtered_lrelu_grad_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                   int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, bool);
#define FS_IMPL(name) name##_cpu
// Winograd tile transforms: CPU only (on CUDA, cuDNN picks its own convolution algorithms).
at::Tensor winograd_input_cpu(const at::Tensor&);
at::Tensor winograd_input_t_cpu(const at::Tensor&, int64_t, int64_t, int64_t);
at::Tensor winograd_output_cpu(const at::Tensor&, int64_t, int64_t, int64_t);
at::Tensor winograd_output_t_cpu(const at::Tensor&);
at::Tensor winograd_weight_cpu(const at::Tensor&);
at::Tensor winograd_weight_t_cpu(const at::Tensor&);
// The Winograd GEMMs with AVX-512 where MKL would run AVX2 (cpu_gemm.cpp, cpu_matmul.py).
bool bmm_avx512_supported();
at::Tensor bmm_avx512_cpu(const at::Tensor&, const at::Tensor&);
#endif
}  // namespace fewshot

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &fewshot::FS_IMPL(bias_act), "clamp(act(x + b) * gain) or its order-th derivative times t",
        py::arg("x"), py::arg("b"), py::arg("t"), py::arg("dim"), py::arg("act"), py::arg("order"), py::arg("alpha"),
        py::arg("gain"), py::arg("clamp"));
  m.def("upfirdn2d", &fewshot::FS_IMPL(upfirdn2d), "upsample, pad, correlate with taps, downsample", py::arg("x"),
        py::arg("f"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"), py::arg("px0"),
        py::arg("px1"), py::arg("py0"), py::arg("py1"), py::arg("flip_filter"));
  m.def("filtered_lrelu", &fewshot::FS_IMPL(filtered_lrelu),
        "bias, upsample with fu, clamp(lrelu * gain), downsample with fd; [y, 2-bit mask or undefined]", py::arg("x"),
        py::arg("b"), py::arg("fu"), py::arg("fd"), py::arg("up"), py::arg("down"), py::arg("px0"), py::arg("px1"),
        py::arg("py0"), py::arg("py1"), py::arg("gain"), py::arg("slope"), py::arg("clamp"), py::arg("flip_filter"),
        py::arg("write_mask"));
  m.def("filtered_lrelu_grad", &fewshot::FS_IMPL(filtered_lrelu_grad),
        "input gradient of filtered_lrelu from the output gradient and the forward's mask", py::arg("gy"),
        py::arg("mask"), py::arg("fu"), py::arg("fd"), py::arg("in_h"), py::arg("in_w"), py::arg("up"), py::arg("down"),
        py::arg("px0"), py::arg("px1"), py::arg("py0"), py::arg("py1"), py::arg("gain"), py::arg("slope"),
        py::arg("flip_filter"));
#ifndef FEWSHOT_CUDA
  m.def("bmm_avx512_supported", &fewshot::bmm_avx512_supported, "whether this CPU runs bmm_avx512");
  m.def("bmm_avx512", &fewshot::bmm_avx512_cpu, "float32 [P,m,k] x [P,k,n] -> [P,m,n] (any strides)", py::arg("a"),
        py::arg("b"));
  m.def("winograd_input", &fewshot::winograd_input_cpu, "x [N,C,H,W] -> V [36,C,tiles]", py::arg("x"));
  m.def("winograd_input_t", &fewshot::winograd_input_t_cpu, "adjoint of winograd_input", py::arg("v"), py::arg("n"),
        py::arg("h"), py::arg("w"));
  m.def("winograd_output", &fewshot::winograd_output_cpu, "M [36,O,tiles] -> y [N,O,H,W]", py::arg("m"), py::arg("n"),
        py::arg("h"), py::arg("w"));
  m.def("winograd_output_t", &fewshot::winograd_output_t_cpu, "adjoint of winograd_output", py::arg("y"));
  m.def("winograd_weight", &fewshot::winograd_weight_cpu, "w [O,C,3,3] -> U [36,O,C]", py::arg("w"));
  m.def("winograd_weight_t", &fewshot::winograd_weight_t_cpu, "adjoint of winograd_weight", py::arg("u"));
#endif
}
