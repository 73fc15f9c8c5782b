// upfirdn2d, tiled: one block computes a tile of outputs (tile_w × tile_h samples of tile_c channels of one
// image) from a tile of the input held in shared memory. Specialised by (up, down) ∈ {(1,1), (2,1), (1,2)} and
// for separable (1-D) filters; the generic kernel (upfirdn2d.cu) covers every other case.
//
// The maths (semantics in upfirdn2d.py). Let U be the input with up − 1 zeros inserted after every sample and
// c the filter in correlation order (c[t] = f[taps − 1 − t], or f[t] with flip_filter). Along one axis
//     y[o] = Σ_t c[t] · U[o·down − pad0 + t],     U[a] = x[a / up] if a ≡ 0 (mod up), else 0.
// Polyphase: with origin a = o·down − pad0, only the taps t ≡ −a (mod up) meet a sample of x, so
//     y[o] = Σ_k c[t0 + k·up] · x[(a + t0)/up + k],   t0 = (−a) mod up,   k = 0, 1, … while t0 + k·up < taps
// — with up = 2 each output reads half the taps, and the zeros of U are never formed (a transposed
// convolution by polyphase components). Outputs o0 … o0 + T − 1 read x from floor((o0·down − pad0)/up) on,
// ((T − 1)·down + taps − 1 + up − 1)/up + 1 samples: the input tile's extent, halo included (`input_extent`).
// A separable filter runs as two passes inside the block: along x for every input row of the tile (into
// shared memory, kept in the accumulation type), then along y for every output. A zero row of U filters to a
// zero row, so the x pass only visits the rows of x itself.
//
// The block code is plain host/device functions of (block, thread) so that tests can run it on the CPU one
// block at a time (upfirdn2d_tiled_emulation.cpp); the CUDA kernel and its launcher are under __CUDACC__.
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define DS_HD __host__ __device__ __forceinline__
#else
#define DS_HD inline
#endif

namespace dermsynth_tiled {

constexpr int kThreads = 256;                     // threads per block
constexpr std::size_t kMaxSharedBytes = 48 * 1024;  // dynamic shared memory without an opt-in

struct Geometry {
    int64_t batch, channels, in_h, in_w, out_h, out_w;
    int64_t pad_x0, pad_y0;
    int64_t x_stride[4], y_stride[4];  // (n, c, h, w), in elements
    int taps_x, taps_y;                // filter width and height (a 1-D filter: its length, both)
    bool separable, channels_last, flip;
    float gain;
    int tile_w, tile_h, tile_c;        // outputs per block
    int in_tile_w, in_tile_h;          // input samples per block, halo included
    int64_t tiles_x, tiles_y, tiles_c, blocks;
};

struct BlockOrigin {
    int64_t n, c0, ox0, oy0, ix0, iy0;  // image, first channel, first output (x, y), first input (x, y)
};

struct Local {
    int c, r, col;  // channel, row and column inside a block's tile
};

DS_HD int64_t floor_div(int64_t a, int64_t b) {
    const int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// The first tap t >= 0 with origin + t divisible by up: (−origin) mod up.
DS_HD int first_tap(int64_t origin, int up) {
    int r = int(origin % up);
    if (r < 0) r += up;
    return r == 0 ? 0 : up - r;
}

inline int input_extent(int tile, int up, int down, int taps) {
    return ((tile - 1) * down + taps - 1 + up - 1) / up + 1;
}

inline int64_t output_extent(int64_t in, int up, int down, int64_t pad0, int64_t pad1, int taps) {
    return (in * up + pad0 + pad1 - taps) / down + 1;
}

DS_HD int filter_values(const Geometry& g) { return g.separable ? g.taps_x : g.taps_x * g.taps_y; }

// Shared memory per block, in accumulator elements: filter, input tile, and the x pass of a separable filter.
inline std::size_t shared_elements(const Geometry& g) {
    const std::size_t input = std::size_t(g.tile_c) * g.in_tile_h * g.in_tile_w;
    const std::size_t rows = g.separable ? std::size_t(g.tile_c) * g.in_tile_h * g.tile_w : 0;
    return std::size_t(filter_values(g)) + input + rows;
}

inline int power_of_two_at_least(int64_t n, int cap) {
    int p = 1;
    while (p < n && p < cap) p *= 2;
    return p;
}

// Tile sizes: about 1024 outputs a block. NCHW: rows of up to 64 samples, then more rows, then more channels
// (small images); channels_last: up to 32 channels a position (coalesced loads and stores), 8 columns. Shrunk
// until the shared memory fits. Overrides > 0 replace the defaults (tests use small tiles to create many tile
// edges). False if not even a 1×1×1 tile fits.
inline bool plan_tiles(Geometry& g, int up, int down, std::size_t acc_bytes, std::size_t max_shared,
                       int tile_w = 0, int tile_h = 0, int tile_c = 0) {
    if (g.channels_last) {
        g.tile_c = power_of_two_at_least(g.channels, 32);
        g.tile_w = power_of_two_at_least(g.out_w, 8);
        g.tile_h = power_of_two_at_least(g.out_h, 1024 / (g.tile_c * g.tile_w) > 1 ? 1024 / (g.tile_c * g.tile_w) : 1);
    } else {
        g.tile_w = power_of_two_at_least(g.out_w, 64);
        g.tile_h = power_of_two_at_least(g.out_h, 1024 / g.tile_w > 1 ? 1024 / g.tile_w : 1);
        g.tile_c = power_of_two_at_least(g.channels, 1024 / (g.tile_w * g.tile_h) > 1 ? 1024 / (g.tile_w * g.tile_h) : 1);
    }
    if (tile_w > 0) g.tile_w = tile_w;
    if (tile_h > 0) g.tile_h = tile_h;
    if (tile_c > 0) g.tile_c = tile_c;
    int* shrink_order[3] = {&g.tile_c, &g.tile_h, &g.tile_w};  // NCHW: channels first, rows, then columns
    if (g.channels_last) {                                      // channels_last: keep the channels longest
        shrink_order[0] = &g.tile_h;
        shrink_order[1] = &g.tile_w;
        shrink_order[2] = &g.tile_c;
    }
    for (;;) {
        g.in_tile_w = input_extent(g.tile_w, up, down, g.taps_x);
        g.in_tile_h = input_extent(g.tile_h, up, down, g.taps_y);
        if (shared_elements(g) * acc_bytes <= max_shared) break;
        int** side = shrink_order;
        while (side < shrink_order + 3 && **side == 1) ++side;
        if (side == shrink_order + 3) return false;
        **side = (**side + 1) / 2;
    }
    g.tiles_x = (g.out_w + g.tile_w - 1) / g.tile_w;
    g.tiles_y = (g.out_h + g.tile_h - 1) / g.tile_h;
    g.tiles_c = (g.channels + g.tile_c - 1) / g.tile_c;
    g.blocks = g.tiles_x * g.tiles_y * g.tiles_c * g.batch;
    return true;
}

// Blocks run along x fastest, so neighbouring blocks share their halos in the L2 cache.
template <int UP, int DOWN>
DS_HD BlockOrigin block_origin(const Geometry& g, int64_t block) {
    BlockOrigin o;
    const int64_t tx = block % g.tiles_x;
    block /= g.tiles_x;
    const int64_t ty = block % g.tiles_y;
    block /= g.tiles_y;
    const int64_t tc = block % g.tiles_c;
    o.n = block / g.tiles_c;
    o.ox0 = tx * g.tile_w;
    o.oy0 = ty * g.tile_h;
    o.c0 = tc * g.tile_c;
    o.ix0 = floor_div(o.ox0 * DOWN - g.pad_x0, UP);
    o.iy0 = floor_div(o.oy0 * DOWN - g.pad_y0, UP);
    return o;
}

// Thread i of a loop over a (chans, rows, cols) tile. The order follows the tensor's memory layout, so
// consecutive threads touch consecutive addresses (columns in NCHW, channels in channels_last), and the
// shared-memory index of element i is i itself (local_index inverts split).
DS_HD Local split(int i, int rows, int cols, int chans, bool channels_last) {
    Local l;
    if (channels_last) {
        l.c = i % chans;
        i /= chans;
        l.col = i % cols;
        l.r = i / cols;
    } else {
        l.col = i % cols;
        i /= cols;
        l.r = i % rows;
        l.c = i / rows;
    }
    return l;
}

DS_HD int local_index(int c, int r, int col, int rows, int cols, int chans, bool channels_last) {
    return channels_last ? (r * cols + col) * chans + c : (c * rows + r) * cols + col;
}

// Phase 1: the filter (in correlation order) and the input tile (zeros outside the image) into shared memory.
template <typename scalar_t, typename acc_t, int UP, int DOWN>
DS_HD void load_phase(const Geometry& g, const BlockOrigin& o, const scalar_t* x, const float* f, acc_t* shared,
                      int thread, int threads) {
    const int taps = filter_values(g);
    for (int t = thread; t < taps; t += threads)  // reversing the flat 2-D filter flips both of its axes
        shared[t] = static_cast<acc_t>(f[g.flip ? t : taps - 1 - t]);
    acc_t* input = shared + taps;
    const int count = g.tile_c * g.in_tile_h * g.in_tile_w;
    for (int i = thread; i < count; i += threads) {
        const Local l = split(i, g.in_tile_h, g.in_tile_w, g.tile_c, g.channels_last);
        const int64_t c = o.c0 + l.c, iy = o.iy0 + l.r, ix = o.ix0 + l.col;
        acc_t value = acc_t(0);
        if (c < g.channels && iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w)
            value = static_cast<acc_t>(
                x[o.n * g.x_stride[0] + c * g.x_stride[1] + iy * g.x_stride[2] + ix * g.x_stride[3]]);
        input[i] = value;
    }
}

// Phase 2 (separable filters): the x pass, for every input row of the tile and every output column.
template <typename scalar_t, typename acc_t, int UP, int DOWN>
DS_HD void row_phase(const Geometry& g, const BlockOrigin& o, acc_t* shared, int thread, int threads) {
    if (!g.separable) return;
    const acc_t* taps = shared;
    const acc_t* input = shared + filter_values(g);
    acc_t* rows = shared + filter_values(g) + g.tile_c * g.in_tile_h * g.in_tile_w;
    const int count = g.tile_c * g.in_tile_h * g.tile_w;
    for (int i = thread; i < count; i += threads) {
        const Local l = split(i, g.in_tile_h, g.tile_w, g.tile_c, g.channels_last);
        const int64_t origin = (o.ox0 + l.col) * DOWN - g.pad_x0;
        const int t0 = first_tap(origin, UP);
        const int col = int((origin + t0) / UP - o.ix0);  // exact: origin + t0 is a multiple of UP
        acc_t sum = acc_t(0);
        for (int t = t0, k = 0; t < g.taps_x; t += UP, ++k)
            sum += taps[t] * input[local_index(l.c, l.r, col + k, g.in_tile_h, g.in_tile_w, g.tile_c, g.channels_last)];
        rows[i] = sum;
    }
}

// Phase 3: every output of the tile — the y pass over the x pass's rows, or the whole 2-D filter.
template <typename scalar_t, typename acc_t, int UP, int DOWN>
DS_HD void output_phase(const Geometry& g, const BlockOrigin& o, const acc_t* shared, scalar_t* y, int thread,
                        int threads) {
    const acc_t* taps = shared;
    const acc_t* input = shared + filter_values(g);
    const acc_t* rows = input + g.tile_c * g.in_tile_h * g.in_tile_w;
    const int count = g.tile_c * g.tile_h * g.tile_w;
    for (int i = thread; i < count; i += threads) {
        const Local l = split(i, g.tile_h, g.tile_w, g.tile_c, g.channels_last);
        const int64_t c = o.c0 + l.c, oy = o.oy0 + l.r, ox = o.ox0 + l.col;
        if (c >= g.channels || oy >= g.out_h || ox >= g.out_w) continue;
        const int64_t origin_y = oy * DOWN - g.pad_y0;
        const int ty0 = first_tap(origin_y, UP);
        const int row = int((origin_y + ty0) / UP - o.iy0);
        acc_t sum = acc_t(0);
        if (g.separable) {
            for (int t = ty0, k = 0; t < g.taps_y; t += UP, ++k)
                sum += taps[t] * rows[local_index(l.c, row + k, l.col, g.in_tile_h, g.tile_w, g.tile_c, g.channels_last)];
        } else {
            const int64_t origin_x = ox * DOWN - g.pad_x0;
            const int tx0 = first_tap(origin_x, UP);
            const int col = int((origin_x + tx0) / UP - o.ix0);
            for (int ty = ty0, ky = 0; ty < g.taps_y; ty += UP, ++ky)
                for (int tx = tx0, kx = 0; tx < g.taps_x; tx += UP, ++kx)
                    sum += taps[ty * g.taps_x + tx] *
                           input[local_index(l.c, row + ky, col + kx, g.in_tile_h, g.in_tile_w, g.tile_c,
                                             g.channels_last)];
        }
        y[o.n * g.y_stride[0] + c * g.y_stride[1] + oy * g.y_stride[2] + ox * g.y_stride[3]] =
            static_cast<scalar_t>(sum * acc_t(g.gain));
    }
}

}  // namespace dermsynth_tiled

#ifdef __CUDACC__
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

namespace {

using namespace dermsynth_tiled;

template <typename scalar_t, int UP, int DOWN>
__global__ void __launch_bounds__(kThreads) upfirdn2d_tiled_kernel(const scalar_t* __restrict__ x,
                                                                   const float* __restrict__ f,
                                                                   scalar_t* __restrict__ y, Geometry g) {
    using acc_t = at::opmath_type<scalar_t>;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);
    const BlockOrigin o = block_origin<UP, DOWN>(g, blockIdx.x);
    load_phase<scalar_t, acc_t, UP, DOWN>(g, o, x, f, shared, threadIdx.x, blockDim.x);
    __syncthreads();
    row_phase<scalar_t, acc_t, UP, DOWN>(g, o, shared, threadIdx.x, blockDim.x);
    __syncthreads();
    output_phase<scalar_t, acc_t, UP, DOWN>(g, o, shared, y, threadIdx.x, blockDim.x);
}

template <typename scalar_t, int UP, int DOWN>
void launch(const torch::Tensor& x, const torch::Tensor& f, torch::Tensor& y, const Geometry& g, std::size_t bytes) {
    upfirdn2d_tiled_kernel<scalar_t, UP, DOWN><<<unsigned(g.blocks), kThreads, bytes,
                                                 at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<float>(), y.data_ptr<scalar_t>(), g);
}

}  // namespace

torch::Tensor upfirdn2d_tiled(torch::Tensor x, torch::Tensor f, int64_t up, int64_t down, int64_t pad_x0,
                              int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain,
                              int64_t tile_w, int64_t tile_h, int64_t tile_c) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d_tiled: x must be a 4-d CUDA tensor (N, C, H, W)");
    TORCH_CHECK(f.device() == x.device() && f.scalar_type() == torch::kFloat && (f.dim() == 1 || f.dim() == 2),
                "upfirdn2d_tiled: f must be a 1-d (separable) or 2-d float32 filter on x's device");
    TORCH_CHECK((up == 1 && down == 1) || (up == 2 && down == 1) || (up == 1 && down == 2),
                "upfirdn2d_tiled: (up, down) must be (1, 1), (2, 1) or (1, 2); got (", up, ", ", down, ")");
    const at::cuda::OptionalCUDAGuard guard(device_of(x));
    const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (!channels_last) x = x.contiguous();
    f = f.contiguous();
    Geometry g{};
    g.batch = x.size(0);
    g.channels = x.size(1);
    g.in_h = x.size(2);
    g.in_w = x.size(3);
    g.separable = f.dim() == 1;
    g.taps_x = int(f.size(-1));
    g.taps_y = int(f.size(0));
    g.pad_x0 = pad_x0;
    g.pad_y0 = pad_y0;
    g.out_w = output_extent(g.in_w, int(up), int(down), pad_x0, pad_x1, g.taps_x);
    g.out_h = output_extent(g.in_h, int(up), int(down), pad_y0, pad_y1, g.taps_y);
    TORCH_CHECK(g.in_w * up + pad_x0 + pad_x1 >= g.taps_x && g.in_h * up + pad_y0 + pad_y1 >= g.taps_y,
                "upfirdn2d_tiled: the padded image is smaller than the filter");
    g.channels_last = channels_last;
    g.flip = flip_filter;
    g.gain = float(gain);
    auto y = torch::empty({g.batch, g.channels, g.out_h, g.out_w},
                          x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
    if (y.numel() == 0) return y;
    for (int d = 0; d < 4; ++d) {
        g.x_stride[d] = x.stride(d);
        g.y_stride[d] = y.stride(d);
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_tiled", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        TORCH_CHECK(plan_tiles(g, int(up), int(down), sizeof(acc_t), kMaxSharedBytes, int(tile_w), int(tile_h),
                               int(tile_c)),
                    "upfirdn2d_tiled: a ", g.taps_y, "x", g.taps_x, " filter does not fit a tile in shared memory");
        TORCH_CHECK(g.blocks < INT_MAX, "upfirdn2d_tiled: too many blocks (", g.blocks, ")");
        const std::size_t bytes = shared_elements(g) * sizeof(acc_t);
        if (up == 2)
            launch<scalar_t, 2, 1>(x, f, y, g, bytes);
        else if (down == 2)
            launch<scalar_t, 1, 2>(x, f, y, g, bytes);
        else
            launch<scalar_t, 1, 1>(x, f, y, g, bytes);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
#endif  // __CUDACC__
