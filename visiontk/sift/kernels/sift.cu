// visiontk SIFT kernels for NVIDIA GPUs, loaded with cupy.RawModule (NVRTC) and compiled by
// nvcc in the test suite. Each kernel computes what an xp definition in visiontk/sift/ computes
// (and what the numba kernels in _cpu_kernels.py compute); tests compare them on one input.
//
// Layouts: a Gaussian stack is float32 [n_gauss][h][w], row-major. D_l = G_{l+1} - G_l.
// Keypoint arrays are int64 (layer, row, col) and float32 (x, y, scale, direction).

#define ORI_BINS 36
#define DESCR_WIDTH 4
#define DESCR_BINS 8
#define DESCR_HIST (DESCR_WIDTH + 2) * (DESCR_WIDTH + 2) * (DESCR_BINS + 2)

// atan2 in degrees, [0, 360): the odd minimax polynomial OpenCV's fastAtan2 uses (error about
// 0.01 degree), the same as the CPU kernels.
__device__ __forceinline__ float atan2_degrees(float y, float x) {
    const float p1 = 57.283627f, p3 = -18.667446f, p5 = 8.914001f, p7 = -2.539725f;
    float ax = fabsf(x), ay = fabsf(y), a, t, t2;
    if (ax >= ay) {
        t = ay / (ax + 2.220446e-16f);
        t2 = t * t;
        a = (((p7 * t2 + p5) * t2 + p3) * t2 + p1) * t;
    } else {
        t = ax / (ay + 2.220446e-16f);
        t2 = t * t;
        a = 90.f - (((p7 * t2 + p5) * t2 + p3) * t2 + p1) * t;
    }
    if (x < 0) a = 180.f - a;
    if (y < 0) a = 360.f - a;
    return a;
}

__device__ __forceinline__ float dog(const float* g, int layer, int r, int c, int h, int w) {
    const long long plane = (long long)h * w;
    const long long at = layer * plane + (long long)r * w + c;
    return g[at + plane] - g[at];
}

// One thread per pixel of the inner DoG layers: 3x3x3 extremum with |D| > threshold (ties
// count, as OpenCV). Survivors are appended at an atomic counter; the caller sorts them.
extern "C" __global__ void extrema(const float* g, int n_gauss, int h, int w, float threshold,
                                   int border, unsigned long long capacity,
                                   unsigned long long* count, long long* out_layer,
                                   long long* out_row, long long* out_col) {
    const long long inner = (long long)(n_gauss - 3) * h * w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < inner;
         i += (long long)blockDim.x * gridDim.x) {
        const int layer = (int)(i / ((long long)h * w)) + 1;
        const int r = (int)((i / w) % h);
        const int c = (int)(i % w);
        if (r < border || r >= h - border || c < border || c >= w - border) continue;
        const float v = dog(g, layer, r, c, h, w);
        bool ok;
        if (v > threshold) {
            ok = true;
            for (int dl = -1; dl <= 1 && ok; ++dl)
                for (int dr = -1; dr <= 1 && ok; ++dr)
                    for (int dc = -1; dc <= 1 && ok; ++dc)
                        if (dog(g, layer + dl, r + dr, c + dc, h, w) > v) ok = false;
        } else if (v < -threshold) {
            ok = true;
            for (int dl = -1; dl <= 1 && ok; ++dl)
                for (int dr = -1; dr <= 1 && ok; ++dr)
                    for (int dc = -1; dc <= 1 && ok; ++dc)
                        if (dog(g, layer + dl, r + dr, c + dc, h, w) < v) ok = false;
        } else {
            ok = false;
        }
        if (ok) {
            unsigned long long slot = atomicAdd(count, 1ULL);
            if (slot < capacity) {
                out_layer[slot] = layer;
                out_row[slot] = r;
                out_col[slot] = c;
            }
        }
    }
}

// One block per keypoint: 36-bin histogram of gradient directions in a square window of
// radius rint(4.5 scale), Gaussian weight sigma 1.5 scale, accumulated in shared memory.
extern "C" __global__ void orientation_histograms(const float* g, int h, int w,
                                                  const long long* layer, const long long* row,
                                                  const long long* col, const float* scale,
                                                  int count, float* hist) {
    __shared__ float local[ORI_BINS];
    const int k = blockIdx.x;
    if (k >= count) return;
    for (int b = threadIdx.x; b < ORI_BINS; b += blockDim.x) local[b] = 0.f;
    __syncthreads();
    const float sc = scale[k];
    const int radius = (int)rintf(4.5f * sc);
    const float sig = 1.5f * sc;
    const float wscale = -1.f / (2.f * sig * sig);
    const int side = 2 * radius + 1;
    const float* img = g + layer[k] * (long long)h * w;
    for (int s = threadIdx.x; s < side * side; s += blockDim.x) {
        const int i = s / side - radius, j = s % side - radius;
        const int y = (int)row[k] + i, x = (int)col[k] + j;
        if (y <= 0 || y >= h - 1 || x <= 0 || x >= w - 1) continue;
        const float dx = img[y * w + x + 1] - img[y * w + x - 1];
        const float dy = img[(y - 1) * w + x] - img[(y + 1) * w + x];
        const float mag = sqrtf(dx * dx + dy * dy);
        const float ang = atan2_degrees(dy, dx);
        int bin = (int)rintf(ang * (ORI_BINS / 360.f));
        bin = ((bin % ORI_BINS) + ORI_BINS) % ORI_BINS;
        const float weight = expf((float)(i * i) * wscale) * expf((float)(j * j) * wscale);
        atomicAdd(&local[bin], weight * mag);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < ORI_BINS; b += blockDim.x) hist[k * ORI_BINS + b] = local[b];
}

// One block per keypoint: 4x4x8 descriptor with trilinear interpolation, the window centred on
// the keypoint's nearest pixel and rotated by its direction, as OpenCV. Raw (unnormalised)
// values; normalisation and bytes are done by the xp code on the device.
extern "C" __global__ void descriptors(const float* g, int h, int w, const long long* layer,
                                       const float* xs, const float* ys, const float* direction,
                                       const float* scale, int count, float* out) {
    __shared__ float local[DESCR_HIST];
    const int k = blockIdx.x;
    if (k >= count) return;
    const int d = DESCR_WIDTH, n = DESCR_BINS;
    for (int b = threadIdx.x; b < DESCR_HIST; b += blockDim.x) local[b] = 0.f;
    __syncthreads();
    const float hist_width = 3.f * scale[k];
    int radius = (int)rintf(hist_width * 1.4142135623730951f * (d + 1) * 0.5f);
    const int diag = (int)sqrtf((float)h * h + (float)w * w);
    radius = min(radius, diag);
    const float theta = direction[k] * (3.14159265358979f / 180.f);
    const float cos_t = cosf(theta) / hist_width, sin_t = sinf(theta) / hist_width;
    const float wscale = -1.f / (d * d * 0.5f) / (hist_width * hist_width);
    const int px = (int)rintf(xs[k]), py = (int)rintf(ys[k]);
    const float ori = direction[k];
    const float* img = g + layer[k] * (long long)h * w;
    const int side = 2 * radius + 1;
    for (long long s = threadIdx.x; s < (long long)side * side; s += blockDim.x) {
        const int i = (int)(s / side) - radius, j = (int)(s % side) - radius;
        const int y = py + i, x = px + j;
        if (y <= 0 || y >= h - 1 || x <= 0 || x >= w - 1) continue;
        const float c_rot = j * cos_t - i * sin_t;
        const float r_rot = j * sin_t + i * cos_t;
        const float rbin = r_rot + (d / 2 - 0.5f);
        const float cbin = c_rot + (d / 2 - 0.5f);
        if (!(rbin > -1.f && rbin < d && cbin > -1.f && cbin < d)) continue;
        const float dx = img[y * w + x + 1] - img[y * w + x - 1];
        const float dy = img[(y - 1) * w + x] - img[(y + 1) * w + x];
        const float weight = expf((float)(i * i) * wscale) * expf((float)(j * j) * wscale);
        const float mag = sqrtf(dx * dx + dy * dy) * weight;
        const float obin = (atan2_degrees(dy, dx) - ori) * (n / 360.f);
        const int r0 = (int)floorf(rbin), c0 = (int)floorf(cbin);
        int o0 = (int)floorf(obin);
        const float fr = rbin - r0, fc = cbin - c0, fo = obin - o0;
        o0 = ((o0 % n) + n) % n;
        for (int dr = 0; dr < 2; ++dr) {
            const float wr = dr ? fr : 1.f - fr;
            for (int dc = 0; dc < 2; ++dc) {
                const float wc = dc ? fc : 1.f - fc;
                for (int dO = 0; dO < 2; ++dO) {
                    const float wo = dO ? fo : 1.f - fo;
                    const int at = ((r0 + 1 + dr) * (d + 2) + (c0 + 1 + dc)) * (n + 2) + o0 + dO;
                    atomicAdd(&local[at], mag * wr * wc * wo);
                }
            }
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < d * d * n; t += blockDim.x) {
        const int b = t % n, cell = t / n, r = cell / d, c = cell % d;
        const int base = ((r + 1) * (d + 2) + (c + 1)) * (n + 2);
        float v = local[base + b];
        if (b < 2) v += local[base + n + b];
        out[(long long)k * d * d * n + t] = v;
    }
}
