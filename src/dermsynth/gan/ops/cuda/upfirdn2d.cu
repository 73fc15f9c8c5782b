// upfirdn2d: zero-insertion upsampling, padding (negative crops), FIR filtering, downsampling, in one
// pass. One thread per output sample; the filter taps that land on inserted zeros are skipped.
// Gradients come from the same kernel (the adjoint is another upfirdn2d, see upfirdn2d.py).
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

struct Geometry {
    int64_t in_h, in_w, out_h, out_w, filter_h, filter_w;
    int64_t up_x, up_y, down_x, down_y, pad_x0, pad_y0;
};

// First filter tap t >= 0 with (origin + t) divisible by `up` (origin may be negative).
__device__ __forceinline__ int64_t first_tap(int64_t origin, int64_t up) {
    int64_t r = origin % up;
    if (r < 0) r += up;
    return r == 0 ? 0 : up - r;
}

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, int64_t n, Geometry g, bool flip_filter, float gain) {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
        const int64_t ox = i % g.out_w;
        const int64_t oy = (i / g.out_w) % g.out_h;
        const int64_t plane = i / (g.out_w * g.out_h);
        const scalar_t* image = x + plane * g.in_h * g.in_w;
        // Window origin in the upsampled (unpadded) image.
        const int64_t origin_y = oy * g.down_y - g.pad_y0;
        const int64_t origin_x = ox * g.down_x - g.pad_x0;
        acc_t sum = 0;
        for (int64_t ty = first_tap(origin_y, g.up_y); ty < g.filter_h; ty += g.up_y) {
            const int64_t iy = (origin_y + ty) / g.up_y;
            if (iy < 0 || iy >= g.in_h) continue;
            const int64_t fy = flip_filter ? ty : g.filter_h - 1 - ty;  // true convolution flips the filter
            for (int64_t tx = first_tap(origin_x, g.up_x); tx < g.filter_w; tx += g.up_x) {
                const int64_t ix = (origin_x + tx) / g.up_x;
                if (ix < 0 || ix >= g.in_w) continue;
                const int64_t fx = flip_filter ? tx : g.filter_w - 1 - tx;
                sum += static_cast<acc_t>(image[iy * g.in_w + ix]) * static_cast<acc_t>(f[fy * g.filter_w + fx]);
            }
        }
        y[i] = static_cast<scalar_t>(sum * acc_t(gain));
    }
}

}  // namespace

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                        int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                        bool flip_filter, double gain) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a 4-d CUDA tensor (N, C, H, W)");
    TORCH_CHECK(f.device() == x.device() && f.scalar_type() == torch::kFloat && f.dim() == 2,
                "upfirdn2d: f must be a 2-d float32 filter on x's device");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    x = x.contiguous();
    f = f.contiguous();
    Geometry g;
    g.in_h = x.size(2);
    g.in_w = x.size(3);
    g.filter_h = f.size(0);
    g.filter_w = f.size(1);
    g.up_x = up_x; g.up_y = up_y; g.down_x = down_x; g.down_y = down_y;
    g.pad_x0 = pad_x0; g.pad_y0 = pad_y0;
    const int64_t padded_h = g.in_h * up_y + pad_y0 + pad_y1;
    const int64_t padded_w = g.in_w * up_x + pad_x0 + pad_x1;
    TORCH_CHECK(padded_h >= g.filter_h && padded_w >= g.filter_w,
                "upfirdn2d: the padded image is smaller than the filter");
    g.out_h = (padded_h - g.filter_h) / down_y + 1;
    g.out_w = (padded_w - g.filter_w) / down_x + 1;
    auto y = torch::empty({x.size(0), x.size(1), g.out_h, g.out_w}, x.options());
    const int64_t n = y.numel();
    if (n > 0) {
        const int threads = 256;
        const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20));
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d", [&] {
            upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
                x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), n, g, flip_filter, float(gain));
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return channels_last ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}
