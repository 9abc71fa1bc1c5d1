// Host emulation of the part of CUDA C that tfm's kernels use.
//
// A launch runs its blocks one after another on the calling thread. Each CUDA thread of a block is
// a fiber with its own stack, and a scheduler resumes the fibers in turn, so
// barriers, warp shuffles and shared memory behave as on a GPU:
// - `__syncthreads()` waits (yielding to the other fibers) until every live thread of the block
//   has arrived,
// - a warp shuffle writes the lane's value to the warp's slots, waits for the warp, reads the
//   partner lane's slot, and waits again before the slots are reused,
// - `__shared__` variables are function statics: one copy, seen by every thread of the one block
//   running at a time (launches are serialised by a lock).
// A thread that returns leaves both of its barriers, as an exited GPU thread no longer takes part.
// If every live thread waits on a barrier that can never open (a kernel bug), the launch stops
// the process with a message instead of hanging.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <ucontext.h>
#include <vector>

struct emu_uint3 {
    unsigned x, y, z;
};

namespace emu {
struct Fiber {
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t ctx;
#endif
    bool done;
};

// The barriers of the block that is running: live threads, arrivals and a generation count per
// barrier (the block's, and each warp's).
struct Block {
#if defined(__x86_64__)
    void *sched_sp;
#else
    ucontext_t sched;
#endif
    unsigned live, arrived, gen;
    std::vector<unsigned> warp_live, warp_arrived, warp_gen;
    std::vector<unsigned long long> slots;
    unsigned long long progress;
};

inline thread_local emu_uint3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local Block *block = nullptr;
inline thread_local Fiber *current = nullptr;
inline thread_local std::function<void()> *body = nullptr;

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *from,
// switches to the stack `to` and restores its registers (the System V x86-64 ABI's callee-saved
// set: the caller-saved ones are saved by the compiler around the call). No system call, unlike
// swapcontext, which sets the signal mask at every switch.
extern "C" void emu_switch(void **from, void *to);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
inline void yield() { emu_switch(&current->sp, block->sched_sp); }
#else
inline void yield() { swapcontext(&current->ctx, &block->sched); }
#endif

// Arrive at a barrier (live threads, arrivals, generation) and wait until it opens.
inline void arrive(unsigned &live, unsigned &arrived, unsigned &gen) {
    unsigned g = gen;
    if (++arrived == live) {
        arrived = 0;
        ++gen;
        ++block->progress;
    } else {
        while (gen == g) yield();
    }
}

// A thread leaving a barrier: the others no longer wait for it.
inline void leave(unsigned &live, unsigned &arrived, unsigned &gen) {
    if (--live > 0 && arrived == live) {
        arrived = 0;
        ++gen;
    }
    ++block->progress;
}

inline void sync_block() { arrive(block->live, block->arrived, block->gen); }

inline void sync_warp() {
    unsigned w = thread_idx.x / 32;
    arrive(block->warp_live[w], block->warp_arrived[w], block->warp_gen[w]);
}

inline void fiber_main() {
    (*body)();
    unsigned w = thread_idx.x / 32;
    leave(block->warp_live[w], block->warp_arrived[w], block->warp_gen[w]);
    leave(block->live, block->arrived, block->gen);
    current->done = true;
#if defined(__x86_64__)
    // back to the scheduler, never to return here
    void *dead;
    emu_switch(&dead, block->sched_sp);
    std::abort();
#endif
    // (ucontext: returning resumes the scheduler through uc_link)
}

// Prepares fiber `f` to start in fiber_main on the given stack.
inline void start_fiber(Fiber &f, char *stack, std::size_t size) {
    f.done = false;
#if defined(__x86_64__)
    // the first switch pops six registers and "returns" into fiber_main, whose frame then sees the
    // stack aligned as after a call (rsp + 8 a multiple of 16)
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t(15);
    auto *ret = reinterpret_cast<void **>(top - 16);
    ret[0] = reinterpret_cast<void *>(&fiber_main);
    ret[1] = nullptr;
    void **regs = ret - 6;
    for (int i = 0; i < 6; ++i) regs[i] = nullptr;
    f.sp = regs;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack;
    f.ctx.uc_stack.ss_size = size;
    f.ctx.uc_link = &block->sched;
    makecontext(&f.ctx, fiber_main, 0);
#endif
}

// Runs fiber `f` until it yields or finishes.
inline void resume(Fiber &f) {
#if defined(__x86_64__)
    emu_switch(&block->sched_sp, f.sp);
#else
    swapcontext(&block->sched, &f.ctx);
#endif
}

// Runs `kernel` as gx x gy blocks of `threads` threads.
template <class F> void launch(unsigned gx, unsigned gy, unsigned threads, F kernel) {
    static std::mutex one_launch;
    std::lock_guard<std::mutex> lock(one_launch);
    std::function<void()> fn = kernel;
    body = &fn;
    const std::size_t stack = 64 * 1024;
    std::vector<char> stacks(std::size_t(threads) * stack);
    std::vector<Fiber> fibers(threads);
    unsigned warps = (threads + 31) / 32;
    Block b;
    block = &b;
    grid_dim = {gx, gy, 1};
    block_dim = {threads, 1, 1};
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned bx = 0; bx < gx; ++bx) {
            block_idx = {bx, by, 0};
            b.live = threads;
            b.arrived = b.gen = 0;
            b.warp_live.assign(warps, 0);
            for (unsigned w = 0; w < warps; ++w) b.warp_live[w] = std::min(32u, threads - 32 * w);
            b.warp_arrived.assign(warps, 0);
            b.warp_gen.assign(warps, 0);
            b.slots.assign(32 * warps, 0);
            b.progress = 0;
            for (unsigned t = 0; t < threads; ++t) start_fiber(fibers[t], stacks.data() + std::size_t(t) * stack, stack);
            unsigned remaining = threads;
            while (remaining > 0) {
                unsigned long long before = b.progress;
                for (unsigned t = 0; t < threads; ++t) {
                    if (fibers[t].done) continue;
                    current = &fibers[t];
                    thread_idx = {t, 0, 0};
                    resume(fibers[t]);
                    if (fibers[t].done) --remaining;
                }
                if (remaining > 0 && b.progress == before) {
                    std::fprintf(stderr, "tfm-cuda-emu: deadlock: %u threads of block (%u, %u) wait on a barrier that cannot open\n", remaining, bx, by);
                    std::abort();
                }
            }
        }
    }
    block = nullptr;
    current = nullptr;
    body = nullptr;
}

template <class T> T shuffle(T v, unsigned src) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a value wider than 64 bits");
    unsigned lane = thread_idx.x % 32;
    unsigned long long *slots = block->slots.data() + 32 * (thread_idx.x / 32);
    std::memcpy(&slots[lane], &v, sizeof(T));
    sync_warp();
    T r;
    std::memcpy(&r, &slots[src % 32], sizeof(T));
    sync_warp();
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
#define __syncthreads() (emu::sync_block())

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
