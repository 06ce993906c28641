// Just enough of CUDA's device-side language to compile visiontk's .cu kernels as C++ and run
// them on the CPU, so their logic is tested where no GPU exists (CI). A launch runs the grid's
// blocks one after another. In a kernel that calls __syncthreads, a block's threads are fibers
// (ucontext) on one CPU thread: each runs until its next barrier, and none passes it until all
// have reached it; a thread that returns stops counting (as on Volta and later GPUs). Kernels
// without barriers run their threads one after another. __shared__ arrays are thread_local
// function statics: a CPU thread runs one block at a time, and host threads may launch at
// once. Warp intrinsics are not provided, so a kernel that needs them does not compile here.
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <math.h>
#include <ucontext.h>
#include <utility>
#include <vector>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

namespace emu {

// Per CPU thread, so several host threads may launch at once (each runs its own grid).
inline thread_local uint3 thread_idx{0, 0, 0};
inline thread_local uint3 block_idx{0, 0, 0};
inline thread_local dim3 block_dim, grid_dim;

// The fibers of the running block, when the kernel has barriers.
struct Fibers {
    static constexpr std::size_t kStack = 64 * 1024;
    ucontext_t scheduler;
    std::vector<ucontext_t> contexts;
    std::vector<char> stacks;
    std::vector<char> done;
    unsigned current = 0;
    std::function<void()> body;
};
inline thread_local Fibers* fibers = nullptr;

inline void fiber_entry() {
    fibers->body();
    fibers->done[fibers->current] = 1;  // returning resumes the scheduler (uc_link)
}

inline uint3 thread_at(unsigned t, dim3 block) {
    return {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
}

template <class Body>
void run(dim3 grid, dim3 block, bool barriers, Body body) {
    grid_dim = grid;
    block_dim = block;
    const unsigned n = block.x * block.y * block.z;
    Fibers state;
    if (barriers) {
        state.contexts.resize(n);
        state.stacks.resize(n * Fibers::kStack);
        state.done.resize(n);
        state.body = body;
        fibers = &state;
    }
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                block_idx = {x, y, z};
                if (!barriers) {
                    for (unsigned t = 0; t < n; ++t) {
                        thread_idx = thread_at(t, block);
                        body();
                    }
                    continue;
                }
                for (unsigned t = 0; t < n; ++t) {
                    ucontext_t& c = state.contexts[t];
                    getcontext(&c);
                    c.uc_stack.ss_sp = state.stacks.data() + t * Fibers::kStack;
                    c.uc_stack.ss_size = Fibers::kStack;
                    c.uc_link = &state.scheduler;
                    makecontext(&c, fiber_entry, 0);
                    state.done[t] = 0;
                }
                // Each pass resumes every live thread once: to its next barrier or its end.
                for (unsigned alive = n; alive > 0;) {
                    for (unsigned t = 0; t < n; ++t) {
                        if (state.done[t]) continue;
                        state.current = t;
                        thread_idx = thread_at(t, block);
                        swapcontext(&state.scheduler, &state.contexts[t]);
                        if (state.done[t]) --alive;
                    }
                }
            }
    fibers = nullptr;
}

// Kernel parameters arrive as cuLaunchKernel passes them: an array of pointers to the values.
template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <class... A>
void launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** args,
            bool barriers) {
    run(dim3{grid[0], grid[1], grid[2]}, dim3{block[0], block[1], block[2]}, barriers,
        [=] { call(kernel, args, std::index_sequence_for<A...>{}); });
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
// A CPU thread runs one block at a time, so a thread_local function-static array is exactly
// per-block shared memory.
#define __shared__ static thread_local

inline void __syncthreads() {
    if (emu::fibers == nullptr) {
        std::fprintf(stderr, "cuda_host.h: __syncthreads in a kernel launched without barriers\n");
        std::abort();
    }
    swapcontext(&emu::fibers->contexts[emu::fibers->current], &emu::fibers->scheduler);
}

template <class T>
T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}

template <class T>
T atomicMax(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (old < value && !ref.compare_exchange_weak(old, value)) {
    }
    return old;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline float __fdividef(float a, float b) { return a / b; }
