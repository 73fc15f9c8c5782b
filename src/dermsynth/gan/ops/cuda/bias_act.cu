// Fused bias + activation + gain + clamp, and its gradient, for the piecewise-linear activations
// StyleGAN2 uses (linear, relu, lrelu). Their second derivative is zero almost everywhere, so the
// gradient of the gradient is the same masked scaling again (see bias_act.py).
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

enum Activation : int64_t { kLinear = 0, kRelu = 1, kLrelu = 2 };

struct Layout {
    int64_t bias_step;  // bias index = (element index / bias_step) % bias_size
    int64_t bias_size;
};

Layout bias_layout(const torch::Tensor& x, int64_t dim) {
    if (x.dim() == 4 && dim == 1 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast))
        return {1, x.size(1)};
    int64_t step = 1;
    for (int64_t d = dim + 1; d < x.dim(); ++d) step *= x.size(d);
    return {step, x.size(dim)};
}

template <typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t v, int64_t act, acc_t alpha) {
    if (act == kRelu) return v < acc_t(0) ? acc_t(0) : v;
    if (act == kLrelu) return v < acc_t(0) ? v * alpha : v;
    return v;
}

template <typename acc_t>
__device__ __forceinline__ acc_t activation_slope(acc_t v, int64_t act, acc_t alpha) {
    if (act == kRelu) return v > acc_t(0) ? acc_t(1) : acc_t(0);   // as torch's relu backward
    if (act == kLrelu) return v > acc_t(0) ? acc_t(1) : alpha;    // as torch's leaky_relu backward
    return acc_t(1);
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                               scalar_t* __restrict__ y, int64_t n, Layout layout, int64_t act,
                               float alpha, float gain, float clamp) {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
        acc_t v = static_cast<acc_t>(x[i]);
        if (b != nullptr) v += static_cast<acc_t>(b[(i / layout.bias_step) % layout.bias_size]);
        v = activate<acc_t>(v, act, acc_t(alpha)) * acc_t(gain);
        if (clamp >= 0) v = v > acc_t(clamp) ? acc_t(clamp) : (v < acc_t(-clamp) ? acc_t(-clamp) : v);
        y[i] = static_cast<scalar_t>(v);
    }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, scalar_t* __restrict__ dx, int64_t n,
                                Layout layout, int64_t act, float alpha, float gain, float clamp) {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
        acc_t v = static_cast<acc_t>(x[i]);
        if (b != nullptr) v += static_cast<acc_t>(b[(i / layout.bias_step) % layout.bias_size]);
        acc_t slope = activation_slope<acc_t>(v, act, acc_t(alpha)) * acc_t(gain);
        if (clamp >= 0) {
            acc_t u = activate<acc_t>(v, act, acc_t(alpha)) * acc_t(gain);
            if (u > acc_t(clamp) || u < acc_t(-clamp)) slope = acc_t(0);  // torch.clamp passes the boundary
        }
        dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * slope);
    }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& b, int64_t dim, int64_t act) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(act == kLinear || act == kRelu || act == kLrelu, "bias_act: unsupported activation code ", act);
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for a ", x.dim(), "-d tensor");
    if (b.numel() > 0) {
        TORCH_CHECK(b.device() == x.device() && b.scalar_type() == x.scalar_type(),
                    "bias_act: b must have x's device and dtype");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be a vector of x.size(dim)");
    }
}

std::tuple<int, int> launch_shape(int64_t n) {
    const int threads = 256;
    int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
    return {int(std::max<int64_t>(blocks, 1)), threads};
}

torch::Tensor dense(const torch::Tensor& t) {
    bool dense_4d = t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast);
    return (t.is_contiguous() || dense_4d) ? t : t.contiguous();
}

}  // namespace

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha,
                               double gain, double clamp) {
    check_inputs(x, b, dim, act);
    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    x = dense(x);
    b = b.contiguous();
    auto y = torch::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0) return y;
    auto [blocks, threads] = launch_shape(n);
    Layout layout = bias_layout(x, dim);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_forward", [&] {
        forward_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), b.numel() ? b.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), n,
            layout, act, float(alpha), float(gain), float(clamp));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act,
                                double alpha, double gain, double clamp) {
    check_inputs(x, b, dim, act);
    TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "bias_act: dy must match x");
    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    x = dense(x);
    dy = dy.contiguous(x.is_contiguous() ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast);
    b = b.contiguous();
    auto dx = torch::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0) return dx;
    auto [blocks, threads] = launch_shape(n);
    Layout layout = bias_layout(x, dim);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_backward", [&] {
        backward_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
            dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b.numel() ? b.data_ptr<scalar_t>() : nullptr,
            dx.data_ptr<scalar_t>(), n, layout, act, float(alpha), float(gain), float(clamp));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dx;
}
