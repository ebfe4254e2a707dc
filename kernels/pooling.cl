// Max pooling per channel plane (n * C planes of H x W, channel-major), windows kh x kw every
// (sh, sw): y[i, j] = the window's greatest value; the first strictly greatest in row-major
// window order wins a tie, and its offset a * kw + b is kept (as a REAL) for the backward pass.
// Overlapping windows (stride < kernel) take dx by a gather: each input sums dy over the
// windows that picked it, without atomics.

// Output o of the n * C planes' outputs (plane q = o / (OH OW)): its window's greatest value
// and that value's offset a * kw + b, the window read in row-major order from registers. (One
// work-item per output: the same outputs in 0.4x the time of a work-item per output row keeping
// its best values in y and picked, at 3 x 3 windows over 9-24 wide planes.)
void pool_forward_at(int o, int H, int W, int kh, int kw, int sh, int sw, int OH, int OW,
                     global const REAL *x, global REAL *y, global REAL *picked) {
    const int q = o / (OH * OW), r = o % (OH * OW);
    global const REAL *top = x + ((size_t)q * H + r / OW * sh) * W + r % OW * sw;
    REAL best = top[0];
    int at = 0;
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b) {
            const REAL v = top[a * W + b];
            const int greater = v > best;
            best = greater ? v : best;
            at = greater ? a * kw + b : at;
        }
    y[o] = best;
    picked[o] = at;
}

// global size (planes * OH * OW)
kernel void pool_forward(int planes, int H, int W, int kh, int kw, int sh, int sw, int OH, int OW,
                         global const REAL *x, global REAL *y, global REAL *picked) {
    const int o = get_global_id(0);
    if (o < planes * OH * OW) pool_forward_at(o, H, W, kh, kw, sh, sw, OH, OW, x, y, picked);
}

// Input p of plane q: the sum of dy over the windows that picked it.
REAL pool_backward_at(int p, int q, int H, int W, int kh, int kw, int sh, int sw, int OH,
                      int OW, global const REAL *picked, global const REAL *dy) {
    int yy = p / W, xx = p % W;
    int4 range = windows_covering(yy, xx, kh, kw, sh, sw, OH, OW);  // convolution.cl
    REAL acc = 0;
    for (int i = range.x; i <= range.y; ++i)
        for (int j = range.z; j <= range.w; ++j) {
            int a = yy - i * sh, b = xx - j * sw;
            size_t o = (size_t)q * OH * OW + i * OW + j;
            if (a >= 0 && a < kh && b >= 0 && b < kw && (int)picked[o] == a * kw + b)
                acc += dy[o];
        }
    return acc;
}

// global size (H * W, planes)
kernel void pool_backward(int planes, int H, int W, int kh, int kw, int sh, int sw, int OH,
                          int OW, global const REAL *picked, global const REAL *dy,
                          global REAL *dx) {
    int p = get_global_id(0), q = get_global_id(1);
    if (p >= H * W || q >= planes) return;
    dx[(size_t)q * H * W + p] = pool_backward_at(p, q, H, W, kh, kw, sh, sw, OH, OW, picked,
                                                 dy);
}

// Windows that do not overlap (stride >= kernel): one work-item per input row g = q * H + r
// (plane q) writes the row, along it: dy where a window picked the input, 0 elsewhere (past
// the last window too). global size (planes * H)
void pool_backward_cells_row(int g, int H, int W, int kh, int kw, int sh, int sw, int OH,
                             int OW, global const REAL *picked, global const REAL *dy,
                             global REAL *dx) {
    const int i = g % H / sh, a = g % H % sh, o = (g / H * OH + i) * OW;
    global REAL *row = dx + (size_t)g * W;
    int j = 0;
    if (i < OH && a < kh)
        for (; j < OW; ++j) {
            const int at = (int)picked[o + j] - a * kw, c = at < kw ? at : -1;  // in row a
            const REAL v = dy[o + j];
            for (int b = 0; b < sw && j * sw + b < W; ++b) row[j * sw + b] = b == c ? v : 0;
        }
    for (int b = j * sw; b < W; ++b) row[b] = 0;
}

kernel void pool_backward_cells(int planes, int H, int W, int kh, int kw, int sh, int sw,
                                int OH, int OW, global const REAL *picked,
                                global const REAL *dy, global REAL *dx) {
    const int g = get_global_id(0);
    if (g < planes * H) pool_backward_cells_row(g, H, W, kh, kw, sh, sw, OH, OW, picked, dy, dx);
}

#ifdef REAL_IS_DOUBLE
typedef long4 pool2_mask;
#define CONVERT_REAL4 convert_double4
#else
typedef int4 pool2_mask;
#define CONVERT_REAL4 convert_float4
#endif
// Candidate c of 4 windows side by side (v) replaces the best where greater: the tie rule of
// pool_forward_at; `at` the candidate's index, as ints (a select of REAL constants compiled
// to masked loads, which stalled ~500 cycles each here).
#define POOL2_PICK(v, c)                                                                      \
    {                                                                                         \
        const REAL4 cand = (v);                                                               \
        const pool2_mask greater = cand > best;                                               \
        best = select(best, cand, greater);                                                   \
        at = select(at, (pool2_mask)(c), greater);                                            \
    }

// Windows of 2 x 2 every 2 (the common case: Grenade's examples, LeNet), vectorised by hand:
// a work-item takes a row of outputs 4 at a time, loading 8 inputs from each of the 2 rows
// under them and splitting even from odd columns. The same outputs, tie rule and picked
// offsets as pool_forward. global size (planes * OH)
void pool2_forward_row(int row, int OW, global const REAL *x, global REAL *y,
                       global REAL *picked) {
    const int W = 2 * OW;  // row = q * OH + i
    for (int j0 = 0; j0 < OW; j0 += 4) {
        global const REAL *top = x + (size_t)row * 2 * W + 2 * j0;
        const size_t o = (size_t)row * OW + j0;
        if (j0 + 4 <= OW) {
            const REAL8 r0 = vload8(0, top), r1 = vload8(0, top + W);
            REAL4 best = r0.even;
            pool2_mask at = 0;
            POOL2_PICK(r0.odd, 1) POOL2_PICK(r1.even, 2) POOL2_PICK(r1.odd, 3)
            vstore4(best, 0, y + o);
            vstore4(CONVERT_REAL4(at), 0, picked + o);
            continue;
        }
        for (int j = j0; j < OW; ++j) {
            global const REAL *w = top + 2 * (j - j0);
            REAL best = w[0], at = 0;
            const REAL cands[3] = {w[1], w[W], w[W + 1]};
            for (int c = 0; c < 3; ++c)
                if (cands[c] > best) { best = cands[c]; at = c + 1; }
            y[o + j - j0] = best;
            picked[o + j - j0] = at;
        }
    }
}

kernel void pool2_forward(int planes, int OH, int OW, global const REAL *x, global REAL *y,
                          global REAL *picked) {
    const int row = get_global_id(0);
    if (row < planes * OH) pool2_forward_row(row, OW, x, y, picked);
}

// Its backward pass: each input gets dy where its window picked it, else 0.
// global size (planes * OH)
void pool2_backward_row(int row, int OW, global const REAL *picked, global const REAL *dy,
                        global REAL *dx) {
    const int W = 2 * OW;
    for (int j0 = 0; j0 < OW; j0 += 4) {
        global REAL *top = dx + (size_t)row * 2 * W + 2 * j0;
        const size_t o = (size_t)row * OW + j0;
        if (j0 + 4 <= OW) {
            const REAL4 at = vload4(0, picked + o), d = vload4(0, dy + o), zero = 0;
            for (int a = 0; a < 2; ++a) {
#ifdef REAL_IS_DOUBLE
                const long4 even = at == (REAL4)(2 * a), odd = at == (REAL4)(2 * a + 1);
#else
                const int4 even = at == (REAL4)(2 * a), odd = at == (REAL4)(2 * a + 1);
#endif
                const REAL4 e = select(zero, d, even), od = select(zero, d, odd);
                vstore8((REAL8)(e.s0, od.s0, e.s1, od.s1, e.s2, od.s2, e.s3, od.s3), 0,
                        top + a * W);
            }
            continue;
        }
        for (int j = j0; j < OW; ++j) {
            const int at = (int)picked[o + j - j0];
            for (int c = 0; c < 4; ++c)
                top[(c / 2) * W + 2 * (j - j0) + c % 2] = at == c ? dy[o + j - j0] : 0;
        }
    }
}

kernel void pool2_backward(int planes, int OH, int OW, global const REAL *picked,
                           global const REAL *dy, global REAL *dx) {
    const int row = get_global_id(0);
    if (row < planes * OH) pool2_backward_row(row, OW, picked, dy, dx);
}
