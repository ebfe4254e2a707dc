// Max pooling per channel plane (n * C planes of H x W, channel-major), windows kh x kw every
// (sh, sw): y[i, j] = the window's greatest value; the first strictly greatest in row-major
// window order wins a tie, and its offset a * kw + b is kept (as a REAL) for the backward pass.
// Overlapping windows (stride < kernel) take dx by a gather: each input sums dy over the
// windows that picked it, without atomics.

// One work-item per output row (plane q, row i): the window offsets (a, b) in row-major order,
// each a pass along the row (vectorised), keeping the first strictly greatest.
// global size (planes * OH)
kernel void pool_forward_rows(int planes, int H, int W, int kh, int kw, int sh, int sw, int OH,
                              int OW, global const REAL *x, global REAL *y,
                              global REAL *picked) {
    int g = get_global_id(0);
    if (g >= planes * OH) return;
    int q = g / OH, i = g % OH;
    global const REAL *top = x + ((size_t)q * H + i * sh) * W;
    global REAL *best = y + (size_t)g * OW, *at = picked + (size_t)g * OW;
    for (int j = 0; j < OW; ++j) {
        best[j] = top[j * sw];
        at[j] = 0;
    }
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b) {
            if (a == 0 && b == 0) continue;
            global const REAL *row = top + a * W + b;
            for (int j = 0; j < OW; ++j) {
                REAL v = row[j * sw];
                int greater = v > best[j];
                best[j] = greater ? v : best[j];
                at[j] = greater ? (REAL)(a * kw + b) : at[j];
            }
        }
}

// global size (H * W, planes)
kernel void pool_backward(int planes, int H, int W, int kh, int kw, int sh, int sw, int OH,
                          int OW, global const REAL *picked, global const REAL *dy,
                          global REAL *dx) {
    int p = get_global_id(0), q = get_global_id(1);
    if (p >= H * W || q >= planes) return;
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
    dx[(size_t)q * H * W + p] = acc;
}

// Windows that do not overlap (stride >= kernel): one work-item per output row (plane q, row i)
// writes the sh rows of inputs its windows start: dy where a window picked, 0 elsewhere. Loops
// along the row, which the compiler vectorises. global size (planes * OH)
kernel void pool_backward_cells(int planes, int H, int W, int kh, int kw, int sh, int sw,
                                int OH, int OW, global const REAL *picked,
                                global const REAL *dy, global REAL *dx) {
    int g = get_global_id(0);
    if (g >= planes * OH) return;
    int q = g / OH, i = g % OH;
    global const REAL *at = picked + (size_t)g * OW, *grad = dy + (size_t)g * OW;
    for (int a = 0; a < sh && i * sh + a < H; ++a) {
        global REAL *row = dx + ((size_t)q * H + i * sh + a) * W;
        for (int b = 0; b < sw; ++b)
            for (int j = 0; j < OW && j * sw + b < W; ++j)
                row[j * sw + b] = a < kh && b < kw && (int)at[j] == a * kw + b ? grad[j] : 0;
    }
}
