// visiontk SIFT kernels for NVIDIA GPUs, loaded with cupy.RawModule (NVRTC) and compiled by
// nvcc in the test suite. Each kernel computes what an xp definition in visiontk/_sift/ computes
// (and what the numba kernels in _cpu_kernels.py compute); tests compare them on one input.
//
// Layouts: a Gaussian stack is float32 [n_gauss][h][w], row-major; the DoG stack
// [n_gauss - 1][h][w] holds D_l = G_{l+1} - G_l.
// Keypoint arrays are int64 (octave, layer, row, col) and float32 (x, y, scale, direction).

//
// SIFT's constants (ORI_BINS, DESCR_WIDTH, ..., the atan polynomial) and the blur tile come from
// the compile options, -D NAME=value, made by visiontk._sift._gpu_kernels.compile_options()
// from visiontk/_sift/constants.py: the kernels hold no copies of them.

#ifndef ORI_BINS
#error "compile with the options of visiontk._sift._gpu_kernels.compile_options()"
#endif
#define DESCR_HIST (DESCR_WIDTH + 2) * (DESCR_WIDTH + 2) * (DESCR_BINS + 2)
#define FLT_EPS 1.1920929e-07f

// atan2 in degrees, [0, 360): the odd minimax polynomial OpenCV's fastAtan2 uses (error about
// 0.01 degree), the same as the CPU kernels.
__device__ __forceinline__ float atan2_degrees(float y, float x) {
    const float p1 = ATAN_P1, p3 = ATAN_P3, p5 = ATAN_P5, p7 = ATAN_P7;
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

// ---------------------------------------------------------------------------------------------
// Scale space: every Gaussian layer of an octave and the DoG, from the octave's base, in one
// kernel. Layer l is the base blurred by sqrt(sigma_l^2 - sigma_0^2) (CudaSift does the same):
// equal to OpenCV's layer-by-layer blurs up to the 4-sigma truncation (a few borderline
// keypoints come or go, docs/gpu.md; with chained blurs these kernels reproduce the CPU's
// keypoints exactly). Borders reflect without repeating the edge pixel (BORDER_REFLECT_101). Each block loads its tile plus a halo of the widest
// kernel into shared memory once, then per layer runs the horizontal pass into shared memory and
// the vertical pass into the outputs; a thread keeps its previous layer's values in registers
// for the DoG.

// BLUR_TILE_W, BLUR_TILE_H, BLUR_MAX_RADIUS and BLUR_MAX_PER_THREAD (outputs per thread) come
// from the compile options, as the host sizes its launches with them.
#define BLUR_TAPS (2 * BLUR_MAX_RADIUS + 1)
#define BLUR_SRC_W (BLUR_TILE_W + 2 * BLUR_MAX_RADIUS)
#define BLUR_SRC_H (BLUR_TILE_H + 2 * BLUR_MAX_RADIUS)

__device__ __forceinline__ int reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
    return i;
}

// taps: [n_gauss][BLUR_TAPS], layer l's kernel centred at BLUR_MAX_RADIUS with radii[l] taps
// each side (layer 0: radius 0, tap 1: a copy of the base). gauss: [n_gauss][h][w];
// dogs: [n_gauss - 1][h][w]. radius_max = max(radii) <= BLUR_MAX_RADIUS.
extern "C" __global__ void octave_blur_dog(const float* base, int h, int w, int n_gauss,
                                           const float* taps, const int* radii, int radius_max,
                                           float* gauss, float* dogs) {
    __shared__ float src[BLUR_SRC_H * BLUR_SRC_W];
    __shared__ float rows[BLUR_SRC_H * BLUR_TILE_W];
    const int threads = blockDim.x * blockDim.y;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int x0 = blockIdx.x * BLUR_TILE_W, y0 = blockIdx.y * BLUR_TILE_H;
    const int rm = radius_max;
    const int src_h = BLUR_TILE_H + 2 * rm, src_w = BLUR_TILE_W + 2 * rm;
    for (int s = tid; s < src_h * src_w; s += threads) {
        const int r = s / src_w, c = s % src_w;
        src[r * BLUR_SRC_W + c] =
            base[(long long)reflect101(y0 - rm + r, h) * w + reflect101(x0 - rm + c, w)];
    }
    float previous[BLUR_MAX_PER_THREAD];
    const long long plane = (long long)h * w;
    for (int layer = 0; layer < n_gauss; ++layer) {
        __syncthreads();  // src is loaded / the last layer's vertical pass is done with rows
        const float* t = taps + layer * BLUR_TAPS + BLUR_MAX_RADIUS;
        const int radius = radii[layer];
        for (int s = tid; s < src_h * BLUR_TILE_W; s += threads) {
            const int r = s / BLUR_TILE_W, c = s % BLUR_TILE_W;
            const float* line = src + r * BLUR_SRC_W + c + rm;
            float sum = t[0] * line[0];
            for (int k = 1; k <= radius; ++k) sum += t[k] * (line[-k] + line[k]);
            rows[r * BLUR_TILE_W + c] = sum;
        }
        __syncthreads();
        for (int j = 0, s = tid; s < BLUR_TILE_W * BLUR_TILE_H; ++j, s += threads) {
            const int r = s / BLUR_TILE_W, c = s % BLUR_TILE_W;
            const float* column = rows + (r + rm) * BLUR_TILE_W + c;
            float sum = t[0] * column[0];
            for (int k = 1; k <= radius; ++k)
                sum += t[k] * (column[-k * BLUR_TILE_W] + column[k * BLUR_TILE_W]);
            const int y = y0 + r, x = x0 + c;
            if (y < h && x < w) {
                const long long at = (long long)y * w + x;
                gauss[layer * plane + at] = sum;
                if (layer > 0) dogs[(layer - 1) * plane + at] = sum - previous[j];
            }
            previous[j] = sum;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extrema: one thread per pixel of the inner DoG layers finds 3x3x3 extrema with |D| > threshold
// (ties count, as OpenCV), refines each by the quadratic fit of visiontk._sift.detect
// (refine_extrema: same arithmetic, float32, same order), applies the contrast and edge tests,
// and appends survivors at an atomic counter. The caller orders them by position.

#define IMG_SCALE ((float)(1.0 / 255.0))
#define HALF_SCALE ((float)(0.5 / 255.0))
#define QUARTER_SCALE ((float)(0.25 / 255.0))

struct Fit {
    float v, g0, g1, g2, dxx, dyy, dss, dxy, dxs, dys;
};

__device__ __forceinline__ Fit local_fit(const float* dogs, long long idx, int w,
                                         long long plane) {
    const float* d = dogs + idx;
    Fit f;
    f.v = d[0];
    const float x1 = d[1], x0 = d[-1], y1 = d[w], y0 = d[-w], s1 = d[plane], s0 = d[-plane];
    f.g0 = (x1 - x0) * HALF_SCALE;
    f.g1 = (y1 - y0) * HALF_SCALE;
    f.g2 = (s1 - s0) * HALF_SCALE;
    f.dxx = (x1 + x0 - 2.f * f.v) * IMG_SCALE;
    f.dyy = (y1 + y0 - 2.f * f.v) * IMG_SCALE;
    f.dss = (s1 + s0 - 2.f * f.v) * IMG_SCALE;
    f.dxy = (d[w + 1] - d[w - 1] - d[-w + 1] + d[-w - 1]) * QUARTER_SCALE;
    f.dxs = (d[plane + 1] - d[plane - 1] - d[-plane + 1] + d[-plane - 1]) * QUARTER_SCALE;
    f.dys = (d[plane + w] - d[plane - w] - d[-plane + w] + d[-plane - w]) * QUARTER_SCALE;
    return f;
}

__device__ __forceinline__ bool is_extremum(const float* dogs, long long idx, int w,
                                            long long plane, float threshold) {
    const float v = dogs[idx];
    const bool peak = v > threshold;
    if (!peak && !(v < -threshold)) return false;
    for (int dl = -1; dl <= 1; ++dl)
        for (int dr = -1; dr <= 1; ++dr)
            for (int dc = -1; dc <= 1; ++dc) {
                const float u = dogs[idx + dl * plane + dr * w + dc];
                if (peak ? u > v : u < v) return false;
            }
    return true;
}

// VLFeat's move (detect._step): -1, 0 or +1 towards an offset beyond 0.6 that keeps the
// sample in [low, high).
__device__ __forceinline__ int tolerant_step(float offset, int position, int low, int high) {
    return (offset > VLFEAT_MOVE_OFFSET && position + 1 < high ? 1 : 0) -
           (offset < -VLFEAT_MOVE_OFFSET && position - 1 >= low ? 1 : 0);
}

// dogs: [n_layers + 2][h][w]. Outputs, one entry per kept extremum: the (layer, row, col) it
// converged to, offsets (layer, row, col) of the fitted extremum from it, and |D| there.
// tolerant != 0 localises as detect.refine_extrema_tolerant (VLFeat's tolerances) instead of
// OpenCV.
extern "C" __global__ void detect_extrema(const float* dogs, int n_layers, int h, int w,
                                          float threshold, float contrast_threshold,
                                          float edge_threshold, int border, int max_steps,
                                          int tolerant,
                                          unsigned long long capacity, unsigned long long* count,
                                          long long* out_layer, long long* out_row,
                                          long long* out_col, float* out_offset,
                                          float* out_response) {
    const long long plane = (long long)h * w;
    const long long inner = n_layers * plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < inner;
         i += (long long)blockDim.x * gridDim.x) {
        int layer = (int)(i / plane) + 1;
        int r = (int)((i / w) % h);
        int c = (int)(i % w);
        if (r < border || r >= h - border || c < border || c >= w - border) continue;
        if (!is_extremum(dogs, i + plane, w, plane, threshold)) continue;
        Fit f = {};
        float xs = 0.f, xr = 0.f, xc = 0.f;
        bool converged = false;
        for (int step = 0; step < max_steps; ++step) {
            f = local_fit(dogs, layer * plane + (long long)r * w + c, w, plane);
            // H X = g by Doolittle LU without pivoting (visiontk._sift.detect._solve_symmetric3).
            const float l10 = f.dxy / f.dxx, l20 = f.dxs / f.dxx;
            const float u11 = f.dyy - l10 * f.dxy, u12 = f.dys - l10 * f.dxs;
            const float l21 = (f.dys - l20 * f.dxy) / u11;
            const float u22 = (f.dss - l20 * f.dxs) - l21 * u12;
            const float v1 = f.g1 - l10 * f.g0;
            const float v2 = f.g2 - l20 * f.g0 - l21 * v1;
            const float x2 = v2 / u22;
            const float x1 = (v1 - x2 * u12) / u11;
            const float x0 = (f.g0 - x2 * f.dxs - x1 * f.dxy) / f.dxx;
            xc = -x0;
            xr = -x1;
            xs = -x2;
            if (tolerant) {
                const int mc = tolerant_step(xc, c, border, w - border);
                const int mr = tolerant_step(xr, r, border, h - border);
                const int ms = tolerant_step(xs, layer, 1, n_layers + 1);
                if ((mc == 0 && mr == 0 && ms == 0) || step == max_steps - 1) break;
                c += mc;
                r += mr;
                layer += ms;
                continue;
            }
            if (fabsf(xc) < 0.5f && fabsf(xr) < 0.5f && fabsf(xs) < 0.5f) {
                converged = true;
                break;
            }
            if (!isfinite(xc) || !isfinite(xr) || !isfinite(xs) || fabsf(xc) >= 1e6f ||
                fabsf(xr) >= 1e6f || fabsf(xs) >= 1e6f)
                break;
            layer += (int)rintf(xs);
            r += (int)rintf(xr);
            c += (int)rintf(xc);
            if (layer < 1 || layer > n_layers || r < border || r >= h - border || c < border ||
                c >= w - border)
                break;
        }
        if (tolerant)
            converged = fabsf(xc) < VLFEAT_MAX_OFFSET && fabsf(xr) < VLFEAT_MAX_OFFSET &&
                        fabsf(xs) < VLFEAT_MAX_OFFSET && layer + xs >= 0.f &&
                        layer + xs <= n_layers + 1.f;
        if (!converged) continue;
        const float contrast = f.v * IMG_SCALE + 0.5f * (f.g0 * xc + f.g1 * xr + f.g2 * xs);
        const float trace = f.dxx + f.dyy;
        const float det = f.dxx * f.dyy - f.dxy * f.dxy;
        const float edge_limit = (edge_threshold + 1.f) * (edge_threshold + 1.f);
        if (!(fabsf(contrast) * n_layers >= contrast_threshold) || !(det > 0.f) ||
            !(trace * trace * edge_threshold < edge_limit * det))
            continue;
        const unsigned long long slot = atomicAdd(count, 1ULL);
        if (slot < capacity) {
            out_layer[slot] = layer;
            out_row[slot] = r;
            out_col[slot] = c;
            out_offset[3 * slot] = xs;
            out_offset[3 * slot + 1] = xr;
            out_offset[3 * slot + 2] = xc;
            out_response[slot] = fabsf(contrast);
        }
    }
}

// Keypoints of all octaves are handled in one launch: stacks[o] is the address of octave o's
// Gaussian stack (float32 [n_gauss][heights[o]][widths[o]]) and octave[k] says where keypoint
// k lives.
__device__ __forceinline__ const float* keypoint_image(const unsigned long long* stacks,
                                                       const int* heights, const int* widths,
                                                       const long long* octave,
                                                       const long long* layer, int k, int* h,
                                                       int* w) {
    const int o = (int)octave[k];
    *h = heights[o];
    *w = widths[o];
    return reinterpret_cast<const float*>(stacks[o]) + layer[k] * (long long)(*h) * (*w);
}

// One block per keypoint: 36-bin histogram of gradient directions in a square window of
// radius rint(4.5 scale), Gaussian weight sigma 1.5 scale, accumulated in shared memory.
extern "C" __global__ void orientation_histograms(const unsigned long long* stacks,
                                                  const int* heights, const int* widths,
                                                  const long long* octave,
                                                  const long long* layer, const float* xs,
                                                  const float* ys, const float* scale,
                                                  int count, int subpixel, float* hist) {
    __shared__ float local[ORI_BINS];
    const int k = blockIdx.x;
    if (k >= count) return;
    int h, w;
    const float* img = keypoint_image(stacks, heights, widths, octave, layer, k, &h, &w);
    for (int b = threadIdx.x; b < ORI_BINS; b += blockDim.x) local[b] = 0.f;
    __syncthreads();
    const float sc = scale[k];
    const int radius = (int)rintf(ORI_RADIUS_FACTOR * sc);
    const float sig = ORI_SIGMA_FACTOR * sc;
    const float wscale = -1.f / (2.f * sig * sig);
    const int side = 2 * radius + 1;
    // centred on the nearest pixel; weighted around it (OpenCV) or the keypoint (VLFeat)
    const int py = (int)rintf(ys[k]), px = (int)rintf(xs[k]);
    const float fy = subpixel ? ys[k] - py : 0.f, fx = subpixel ? xs[k] - px : 0.f;
    for (int s = threadIdx.x; s < side * side; s += blockDim.x) {
        const int i = s / side - radius, j = s % side - radius;
        const int y = py + i, x = px + j;
        if (y <= 0 || y >= h - 1 || x <= 0 || x >= w - 1) continue;
        const float dx = img[y * w + x + 1] - img[y * w + x - 1];
        const float dy = img[(y - 1) * w + x] - img[(y + 1) * w + x];
        const float mag = sqrtf(dx * dx + dy * dy);
        const float ang = atan2_degrees(dy, dx);
        int bin = (int)rintf(ang * (ORI_BINS / 360.f));
        bin = ((bin % ORI_BINS) + ORI_BINS) % ORI_BINS;
        const float vi = i - fy, vj = j - fx;
        const float weight = expf(vi * vi * wscale) * expf(vj * vj * wscale);
        atomicAdd(&local[bin], weight * mag);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < ORI_BINS; b += blockDim.x) hist[k * ORI_BINS + b] = local[b];
}

// One block per keypoint: 4x4x8 descriptor with trilinear interpolation, the window centred on
// the keypoint's nearest pixel (OpenCV) or, with subpixel, on the keypoint itself (VLFeat),
// and rotated by its direction. Writes the raw
// (unnormalised) values and the uint8 descriptor.
extern "C" __global__ void descriptors(const unsigned long long* stacks, const int* heights,
                                       const int* widths, const long long* octave,
                                       const long long* layer, const float* xs,
                                       const float* ys, const float* direction,
                                       const float* scale, int count, int rootsift, int subpixel,
                                       float* out,
                                       unsigned char* out_bytes) {
    __shared__ float local[DESCR_HIST];
    __shared__ float values[DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS];
    __shared__ float factor[2];
    const int k = blockIdx.x;
    if (k >= count) return;
    int h, w;
    const float* img = keypoint_image(stacks, heights, widths, octave, layer, k, &h, &w);
    const int d = DESCR_WIDTH, n = DESCR_BINS;
    for (int b = threadIdx.x; b < DESCR_HIST; b += blockDim.x) local[b] = 0.f;
    __syncthreads();
    const float hist_width = DESCR_SCALE_FACTOR * scale[k];
    int radius = (int)rintf(hist_width * 1.4142135623730951f * (d + 1) * 0.5f);
    const int diag = (int)sqrtf((float)h * h + (float)w * w);
    radius = min(radius, diag);
    const float theta = direction[k] * (3.14159265358979f / 180.f);
    const float cos_t = cosf(theta) / hist_width, sin_t = sinf(theta) / hist_width;
    const float wscale = -1.f / (d * d * 0.5f) / (hist_width * hist_width);
    const int px = (int)rintf(xs[k]), py = (int)rintf(ys[k]);
    const float fx = subpixel ? xs[k] - px : 0.f, fy = subpixel ? ys[k] - py : 0.f;
    const float ori = direction[k];
    const int side = 2 * radius + 1;
    for (long long s = threadIdx.x; s < (long long)side * side; s += blockDim.x) {
        const int i = (int)(s / side) - radius, j = (int)(s % side) - radius;
        const int y = py + i, x = px + j;
        if (y <= 0 || y >= h - 1 || x <= 0 || x >= w - 1) continue;
        const float u = j - fx, v = i - fy;
        const float c_rot = u * cos_t - v * sin_t;
        const float r_rot = u * sin_t + v * cos_t;
        const float rbin = r_rot + (d / 2 - 0.5f);
        const float cbin = c_rot + (d / 2 - 0.5f);
        if (!(rbin > -1.f && rbin < d && cbin > -1.f && cbin < d)) continue;
        const float dx = img[y * w + x + 1] - img[y * w + x - 1];
        const float dy = img[(y - 1) * w + x] - img[(y + 1) * w + x];
        const float weight = expf(v * v * wscale) * expf(u * u * wscale);
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
        values[t] = v;
    }
    // Bytes as visiontk._sift.describe.quantize_descriptors: normalise, clip at 0.2 of the
    // norm, renormalise, x512 (RootSIFT: L1-normalise and square-root instead), saturate.
    // 128 values: one thread sums them, the block waits.
    const int size = d * d * n;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sq = 0.f;
        for (int t = 0; t < size; ++t) sq += values[t] * values[t];
        const float limit = sqrtf(sq) * DESCR_MAG_THRESHOLD;
        float sq2 = 0.f;
        for (int t = 0; t < size; ++t) {
            const float c = fminf(values[t], limit);
            sq2 += c * c;
        }
        factor[0] = limit;
        factor[1] = DESCR_INT_FACTOR / fmaxf(sqrtf(sq2), FLT_EPS);
        if (rootsift) {
            float l1 = 0.f;
            for (int t = 0; t < size; ++t) l1 += fminf(values[t], limit) * factor[1];
            factor[1] = factor[1] / fmaxf(l1, FLT_EPS);
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < size; t += blockDim.x) {
        float v = fminf(values[t], factor[0]) * factor[1];
        if (rootsift) v = sqrtf(v) * DESCR_INT_FACTOR;
        out_bytes[(long long)k * size + t] = (unsigned char)fminf(fmaxf(rintf(v), 0.f), 255.f);
    }
}
