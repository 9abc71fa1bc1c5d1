// Host emulation of the part of CUDA C that tfm's kernels use.
//
// A launch runs its blocks one after another; each block runs every one of its threads as an OS
// thread, so barriers, warp shuffles and shared memory behave as on a GPU:
// - `__syncthreads()` is a barrier over the block's threads,
// - a warp shuffle writes the lane's value to the warp's slots, waits for the warp, reads the
//   partner lane's slot, and waits again before the slots are reused,
// - `__shared__` variables are function statics: one copy, seen by every thread of the one block
//   running at a time (launches are serialised by a lock).
// A thread that returns leaves both of its barriers, as an exited GPU thread no longer takes part.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct emu_uint3 {
    unsigned x, y, z;
};

namespace emu {
inline thread_local emu_uint3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local std::barrier<> *block_bar = nullptr;
inline thread_local std::barrier<> *warp_bar = nullptr;
inline thread_local unsigned long long *warp_slots = nullptr;

// Runs `body` as a kernel of gx x gy blocks of `block` threads.
template <class F> void launch(unsigned gx, unsigned gy, unsigned block, F body) {
    static std::mutex one_launch;
    std::lock_guard<std::mutex> lock(one_launch);
    unsigned warps = (block + 31) / 32;
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned bx = 0; bx < gx; ++bx) {
            std::barrier<> bar(block);
            std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
            for (unsigned w = 0; w < warps; ++w)
                warp_bars.push_back(std::make_unique<std::barrier<>>(std::min(32u, block - 32 * w)));
            std::vector<unsigned long long> slots(32 * warps);
            std::vector<std::thread> threads;
            threads.reserve(block);
            for (unsigned t = 0; t < block; ++t) {
                threads.emplace_back([&, t] {
                    thread_idx = {t, 0, 0};
                    block_idx = {bx, by, 0};
                    block_dim = {block, 1, 1};
                    grid_dim = {gx, gy, 1};
                    block_bar = &bar;
                    warp_bar = warp_bars[t / 32].get();
                    warp_slots = slots.data() + 32 * (t / 32);
                    body();
                    warp_bar->arrive_and_drop();
                    block_bar->arrive_and_drop();
                });
            }
            for (auto &th : threads) th.join();
        }
    }
}

template <class T> T shuffle(T v, unsigned src) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a value wider than 64 bits");
    unsigned lane = thread_idx.x % 32;
    std::memcpy(&warp_slots[lane], &v, sizeof(T));
    warp_bar->arrive_and_wait();
    T r;
    std::memcpy(&r, &warp_slots[src % 32], sizeof(T));
    warp_bar->arrive_and_wait();
    return r;
}
} // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__ static inline
#define __shared__ static
#define __syncthreads() (emu::block_bar->arrive_and_wait())

template <class T> T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    return emu::shuffle(v, (threadIdx.x % 32) ^ (unsigned)lane_mask);
}

template <class T> T __shfl_down_sync(unsigned, T v, unsigned delta) {
    unsigned lane = threadIdx.x % 32;
    T r = emu::shuffle(v, lane + delta < 32 ? lane + delta : lane);
    return r;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
