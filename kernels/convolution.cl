// Convolution as Grenade defines it: cross-correlation, no bias. A batch x (n, C, H, W),
// channel-major; K (C * kh * kw, F), row (c * kh + a) * kw + b multiplying x[c, i*sh + a, j*sw + b];
// y (n, F, OH, OW) with (OH - 1) * sh = H - kh, (OW - 1) * sw = W - kw.
//   y[s, f, i, j] = sum_{c, a, b} K[(c*kh + a)*kw + b, f] x[s, c, i*sh + a, j*sw + b]
// Deconvolution is its transpose: its forward pass is conv_backward_input, its input delta
// conv_forward, its kernel gradient conv_backward_kernel with x and dy swapped.
// Every output is written once, by one work-item: no atomics, so results are deterministic.

// The outputs (i0..i1, j0..j1) whose kh x kw windows every (sh, sw) may cover input (yy, xx).
int4 windows_covering(int yy, int xx, int kh, int kw, int sh, int sw, int OH, int OW) {
    return (int4)(max(0, (yy - kh + sh) / sh), min(OH - 1, yy / sh),
                  max(0, (xx - kw + sw) / sw), min(OW - 1, xx / sw));
}

#define CONV_FB 4  // filters per work-item in conv_forward: each x value loaded once for them

// global size (OH * OW, ceil(F / CONV_FB), n)
kernel void conv_forward(int n, int C, int H, int W, int F, int kh, int kw, int sh, int sw,
                         int OH, int OW, global const REAL *x, global const REAL *K,
                         global REAL *y) {
    int p = get_global_id(0), f0 = get_global_id(1) * CONV_FB, s = get_global_id(2);
    if (p >= OH * OW || f0 >= F || s >= n) return;
    int i = p / OW, j = p % OW;
    REAL acc[CONV_FB] = {0};
    for (int c = 0; c < C; ++c)
        for (int a = 0; a < kh; ++a) {
            global const REAL *xr = x + (((size_t)s * C + c) * H + i * sh + a) * W + j * sw;
            global const REAL *kr = K + (size_t)(c * kh + a) * kw * F + f0;
            for (int b = 0; b < kw; ++b, kr += F) {
                REAL v = xr[b];
                for (int q = 0; q < CONV_FB; ++q)
                    if (f0 + q < F) acc[q] += kr[q] * v;
            }
        }
    for (int q = 0; q < CONV_FB && f0 + q < F; ++q)
        y[(((size_t)s * F + f0 + q) * OH + i) * OW + j] = acc[q];
}

// dx[s, c, yy, xx] = sum over the outputs (f, i, j) whose window covers (yy, xx) of
// K[(c*kh + a)*kw + b, f] dy[s, f, i, j], a = yy - i*sh, b = xx - j*sw: a gather, so
// overlapping windows add up without atomics. global size (H * W, C, n)
kernel void conv_backward_input(int n, int C, int H, int W, int F, int kh, int kw, int sh,
                                int sw, int OH, int OW, global const REAL *dy,
                                global const REAL *K, global REAL *dx) {
    int p = get_global_id(0), c = get_global_id(1), s = get_global_id(2);
    if (p >= H * W || c >= C || s >= n) return;
    int yy = p / W, xx = p % W;
    int4 range = windows_covering(yy, xx, kh, kw, sh, sw, OH, OW);
    REAL acc = 0;
    for (int i = range.x; i <= range.y; ++i)
        for (int j = range.z; j <= range.w; ++j) {
            int a = yy - i * sh, b = xx - j * sw;
            if (a < 0 || a >= kh || b < 0 || b >= kw) continue;
            global const REAL *kr = K + (size_t)((c * kh + a) * kw + b) * F;
            for (int f = 0; f < F; ++f)
                acc += kr[f] * dy[(((size_t)s * F + f) * OH + i) * OW + j];
        }
    dx[(((size_t)s * C + c) * H + yy) * W + xx] = acc;
}

// dK[(c*kh + a)*kw + b, f] = sum over the batch and the outputs (i, j) of
// dy[s, f, i, j] x[s, c, i*sh + a, j*sw + b]. global size (F, C * kh * kw)
kernel void conv_backward_kernel(int n, int C, int H, int W, int F, int kh, int kw, int sh,
                                 int sw, int OH, int OW, global const REAL *x,
                                 global const REAL *dy, global REAL *dK) {
    int f = get_global_id(0), r = get_global_id(1);
    if (f >= F || r >= C * kh * kw) return;
    int c = r / (kh * kw), a = r / kw % kh, b = r % kw;
    REAL acc = 0;
    for (int s = 0; s < n; ++s) {
        global const REAL *xs = x + (((size_t)s * C + c) * H + a) * W + b;
        global const REAL *ds = dy + ((size_t)s * F + f) * OH * OW;
        for (int i = 0; i < OH; ++i)
            for (int j = 0; j < OW; ++j) acc += ds[i * OW + j] * xs[(size_t)i * sh * W + j * sw];
    }
    dK[(size_t)r * F + f] = acc;
}
