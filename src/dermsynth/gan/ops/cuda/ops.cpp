// Python bindings of dermsynth's fused StyleGAN2 operators. The semantics are defined by the
// reference implementations in bias_act.py and upfirdn2d.py; these kernels must match them.
#include <torch/extension.h>

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha,
                               double gain, double clamp);
torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act,
                                double alpha, double gain, double clamp);
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                        int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                        bool flip_filter, double gain);
torch::Tensor upfirdn2d_tiled(torch::Tensor x, torch::Tensor f, int64_t up, int64_t down, int64_t pad_x0,
                              int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain,
                              int64_t tile_w, int64_t tile_h, int64_t tile_c);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act_forward", &bias_act_forward, "clamp(act(x + b) * gain)");
    m.def("bias_act_backward", &bias_act_backward, "gradient of bias_act with respect to x");
    m.def("upfirdn2d", &upfirdn2d, "upsample, pad, FIR filter, downsample");
    m.def("upfirdn2d_tiled", &upfirdn2d_tiled,
          "upfirdn2d in shared-memory tiles for (up, down) = (1, 1), (2, 1), (1, 2); 1-d filters separable");
}
