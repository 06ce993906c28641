// Kernels that exercise the emulator itself: shared memory, __syncthreads, atomics, threads
// leaving early, 2-D blocks and grids.

// Each block sums its slice through a shared-memory tree, then adds it to *total atomically;
// threads past n leave before the barriers.
extern "C" __global__ void block_sums(const float* x, int n, float* sums, float* total) {
    __shared__ float part[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    part[threadIdx.x] = i < n ? x[i] : 0.f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        sums[blockIdx.x] = part[0];
        atomicAdd(total, part[0]);
    }
}

// out[y][x] = y * 1000 + x for a 2-D launch; threads outside the image return at once.
extern "C" __global__ void coordinates(int h, int w, long long* out) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    out[(long long)y * w + x] = y * 1000LL + x;
}
