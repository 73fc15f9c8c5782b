// The tiled upfirdn2d kernel's block code (upfirdn2d_tiled.cu) run on the CPU, for tests on machines without
// a GPU: every block in turn, its threads phase by phase — all threads finish a phase before any starts the
// next, the order __syncthreads() gives them on the GPU. It checks the tiling, halo and polyphase index maths
// and the tile planner against the reference ops; what only a GPU shows (races, the launch, reduced-precision
// types) is left to the parity tests on a GPU. Not part of the extension: built by
// tests/test_gan_fused_ops.py with the host C++ compiler alone (c++ -shared), float32 and float64.
#include "upfirdn2d_tiled.cu"

#include <vector>

namespace {

using namespace dermsynth_tiled;

template <typename scalar_t, int UP, int DOWN>
void run_blocks(const scalar_t* x, const float* f, scalar_t* y, const Geometry& g, int threads) {
    std::vector<scalar_t> shared(shared_elements(g));
    for (int64_t block = 0; block < g.blocks; ++block) {
        const BlockOrigin o = block_origin<UP, DOWN>(g, block);
        for (int t = 0; t < threads; ++t) load_phase<scalar_t, scalar_t, UP, DOWN>(g, o, x, f, shared.data(), t, threads);
        for (int t = 0; t < threads; ++t) row_phase<scalar_t, scalar_t, UP, DOWN>(g, o, shared.data(), t, threads);
        for (int t = 0; t < threads; ++t) output_phase<scalar_t, scalar_t, UP, DOWN>(g, o, shared.data(), y, t, threads);
    }
}

template <typename scalar_t>
int emulate(const scalar_t* x, const float* f, scalar_t* y, const int64_t* shape, const int64_t* x_stride,
            const int64_t* y_stride, const int64_t* out_hw, int taps_x, int taps_y, int separable, int up, int down,
            const int64_t* padding, int flip, float gain, int channels_last, const int* tile, int threads,
            int64_t* plan) {
    Geometry g{};
    g.batch = shape[0];
    g.channels = shape[1];
    g.in_h = shape[2];
    g.in_w = shape[3];
    g.taps_x = taps_x;
    g.taps_y = taps_y;
    g.separable = separable != 0;
    g.pad_x0 = padding[0];
    g.pad_y0 = padding[2];
    g.out_w = output_extent(g.in_w, up, down, padding[0], padding[1], taps_x);
    g.out_h = output_extent(g.in_h, up, down, padding[2], padding[3], taps_y);
    if (g.out_h != out_hw[0] || g.out_w != out_hw[1]) return 3;  // the caller's output has another size
    g.channels_last = channels_last != 0;
    g.flip = flip != 0;
    g.gain = gain;
    for (int d = 0; d < 4; ++d) {
        g.x_stride[d] = x_stride[d];
        g.y_stride[d] = y_stride[d];
    }
    if (!plan_tiles(g, up, down, sizeof(scalar_t), kMaxSharedBytes, tile[0], tile[1], tile[2])) return 1;
    plan[0] = g.tile_w;
    plan[1] = g.tile_h;
    plan[2] = g.tile_c;
    plan[3] = g.in_tile_w;
    plan[4] = g.in_tile_h;
    plan[5] = g.blocks;
    plan[6] = int64_t(shared_elements(g) * sizeof(scalar_t));
    if (threads <= 0) return 0;  // the plan only
    if (up == 2 && down == 1)
        run_blocks<scalar_t, 2, 1>(x, f, y, g, threads);
    else if (up == 1 && down == 2)
        run_blocks<scalar_t, 1, 2>(x, f, y, g, threads);
    else if (up == 1 && down == 1)
        run_blocks<scalar_t, 1, 1>(x, f, y, g, threads);
    else
        return 2;
    return 0;
}

}  // namespace

// Returns 0, or 1: the filter fits no tile, 2: unsupported (up, down), 3: out_hw is not the output's size.
// padding (x0, x1, y0, y1); tile (w, h, c), 0 = the planner's choice; plan receives tile w, h, c, the input
// tile's w and h, the number of blocks and the shared memory per block in bytes (with this type's accumulator);
// threads <= 0 plans without running.
#define DS_EMULATE(NAME, TYPE)                                                                                    \
    extern "C" int NAME(const TYPE* x, const float* f, TYPE* y, const int64_t* shape, const int64_t* x_stride,    \
                        const int64_t* y_stride, const int64_t* out_hw, int taps_x, int taps_y, int separable,   \
                        int up, int down, const int64_t* padding, int flip, float gain, int channels_last,        \
                        const int* tile, int threads, int64_t* plan) {                                           \
        return emulate<TYPE>(x, f, y, shape, x_stride, y_stride, out_hw, taps_x, taps_y, separable, up, down,    \
                             padding, flip, gain, channels_last, tile, threads, plan);                           \
    }
DS_EMULATE(upfirdn2d_tiled_float, float)
DS_EMULATE(upfirdn2d_tiled_double, double)
