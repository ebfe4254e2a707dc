// Max pooling per channel plane (n * C planes of H x W, channel-major), windows kh x kw every
// (sh, sw): y[i, j] = the window's greatest value; the first strictly greatest in row-major
// window order wins a tie, and its offset a * kw + b is kept (as a REAL) for the backward pass.
// dx is a gather: each input sums dy over the windows that picked it, so overlapping windows
// (stride < kernel) add up without atomics.

// global size (OH * OW, planes)
kernel void pool_forward(int planes, int H, int W, int kh, int kw, int sh, int sw, int OH,
                         int OW, global const REAL *x, global REAL *y, global REAL *picked) {
    int p = get_global_id(0), q = get_global_id(1);
    if (p >= OH * OW || q >= planes) return;
    int i = p / OW, j = p % OW;
    global const REAL *window = x + ((size_t)q * H + i * sh) * W + j * sw;
    REAL best = window[0];
    int at = 0;
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b)
            if (window[a * W + b] > best) {
                best = window[a * W + b];
                at = a * kw + b;
            }
    y[(size_t)q * OH * OW + p] = best;
    picked[(size_t)q * OH * OW + p] = at;
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

// Windows that do not overlap (stride >= kernel): each window's work-item writes the sh x sw
// cell of inputs it starts, dy where it picked and 0 elsewhere. global size (OH * OW, planes)
kernel void pool_backward_cells(int planes, int H, int W, int kh, int kw, int sh, int sw,
                                int OH, int OW, global const REAL *picked,
                                global const REAL *dy, global REAL *dx) {
    int p = get_global_id(0), q = get_global_id(1);
    if (p >= OH * OW || q >= planes) return;
    int i = p / OW, j = p % OW;
    size_t o = (size_t)q * OH * OW + p;
    int at = (int)picked[o];
    REAL g = dy[o];
    global REAL *cell = dx + ((size_t)q * H + i * sh) * W + j * sw;
    for (int a = 0; a < sh && i * sh + a < H; ++a)
        for (int b = 0; b < sw && j * sw + b < W; ++b)
            cell[a * W + b] = a < kh && b < kw && a * kw + b == at ? g : 0;
}
