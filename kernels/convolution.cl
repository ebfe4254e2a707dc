// Convolution as Grenade defines it: cross-correlation, no bias. A batch x (n, C, H, W),
// channel-major; K (C * kh * kw, F), row (c * kh + a) * kw + b multiplying x[c, i*sh + a, j*sw + b];
// y (n, F, OH, OW) with (OH - 1) * sh = H - kh, (OW - 1) * sw = W - kw.
//   y[s, f, i, j] = sum_{c, a, b} K[(c*kh + a)*kw + b, f] x[s, c, i*sh + a, j*sw + b]
// The layers run it as GEMMs over the patches (grenade_py/layers/convolution.py), laid out as
// columns: patches[r, s * OH*OW + p], r = (c * kh + a) * kw + b as K's rows, so every GEMM runs
// along the long batch x positions axis. The input delta's patches go back onto the input by a
// gather (col2im): every output is written once, by one work-item, so results are deterministic.

// The outputs (i0..i1, j0..j1) whose kh x kw windows every (sh, sw) may cover input (yy, xx).
int4 windows_covering(int yy, int xx, int kh, int kw, int sh, int sw, int OH, int OW) {
    return (int4)(max(0, (yy - kh + sh) / sh), min(OH - 1, yy / sh),
                  max(0, (xx - kw + sw) / sw), min(OW - 1, xx / sw));
}

// offsets[r * OH*OW + p]: where patch entry r of position p lies in a sample, (c * H + i*sh + a)
// * W + j*sw + b, held as a REAL (exact: a sample has fewer than 2^24 values).
// global size (OH * OW, C * kh * kw)
kernel void conv_offsets(int C, int H, int W, int kh, int kw, int sh, int sw, int OH, int OW,
                         global REAL *offsets) {
    int p = get_global_id(0), r = get_global_id(1);
    if (p >= OH * OW || r >= C * kh * kw) return;
    int c = r / (kh * kw), a = r / kw % kh, b = r % kw, i = p / OW, j = p % OW;
    offsets[(size_t)r * OH * OW + p] = (c * H + i * sh + a) * W + j * sw + b;
}

// patches[r, s * P + p] = x[s][offsets[r, p]], P = OH*OW: a gather along positions, no
// divisions. global size (P, R, n)
kernel void conv_im2col(int n, int sample, int R, int P, global const REAL *offsets,
                        global const REAL *x, global REAL *patches) {
    int p = get_global_id(0), r = get_global_id(1), s = get_global_id(2);
    if (p >= P || r >= R || s >= n) return;
    patches[(size_t)r * n * P + (size_t)s * P + p] =
        x[(size_t)s * sample + (size_t)offsets[(size_t)r * P + p]];
}

#define COL2IM_ROW 64

// Column stride 1: the positions of one output row are a run of OW consecutive inputs for each
// patch entry r, so im2col is a row copy. rows[r] = (c * H + a) * W + b, the offset of entry
// r's run for output row 0, held as a REAL (exact below 2^24); output row i's runs start
// i * pitch (= sh * W) later. global size (OH, R, n)
kernel void conv_row_offsets(int C, int H, int W, int kh, int kw, global REAL *rows) {
    const int r = get_global_id(0);
    if (r < C * kh * kw) rows[r] = ((r / (kh * kw)) * H + r / kw % kh) * W + r % kw;
}

kernel void conv_im2col_rows(int n, int sample, int pitch, int R, int OH, int OW,
                             global const REAL *rows, global const REAL *x,
                             global REAL *patches) {
    const int i = get_global_id(0), r = get_global_id(1), s = get_global_id(2);
    if (i >= OH || r >= R || s >= n) return;
    global const REAL *from = x + (size_t)s * sample + (size_t)rows[r] + (size_t)i * pitch;
    global REAL *to = patches + ((size_t)r * n + s) * OH * OW + (size_t)i * OW;
    int j = 0;
    for (; j + 8 <= OW; j += 8) vstore8(vload8(0, from + j), 0, to + j);
    for (; j < OW; ++j) to[j] = from[j];
}

// Stride 1: one work-item per input row (s, c, yy) adds, for each kernel offset (a, b), a run
// of consecutive patch entries onto consecutive entries of its row: loops along contiguous
// memory, which the compiler vectorises (a gather per entry does not).
// global size (n * C * H)
kernel void conv_col2im_rows(int n, int C, int H, int W, int kh, int kw, int OH, int OW,
                             global const REAL *patches, global REAL *dx) {
    int g = get_global_id(0);
    if (g >= n * C * H) return;
    int yy = g % H, q = g / H, s = q / C, c = q % C;
    const size_t columns = (size_t)n * OH * OW;
    global REAL *row = dx + (size_t)g * W;
    if (W > COL2IM_ROW) {  // rows too long for the private accumulator: add in place
        for (int xx = 0; xx < W; ++xx) row[xx] = 0;
        for (int a = 0; a < kh; ++a) {
            int i = yy - a;
            if (i < 0 || i >= OH) continue;
            for (int b = 0; b < kw; ++b) {
                global const REAL *src = patches + (size_t)((c * kh + a) * kw + b) * columns +
                                         (size_t)s * OH * OW + (size_t)i * OW - b;
                for (int xx = b; xx < OW + b; ++xx) row[xx] += src[xx];
            }
        }
        return;
    }
    // The row adds up in private memory, which no global pointer can alias, so the compiler
    // vectorises the runs; it is written once.
    REAL acc[COL2IM_ROW];
    for (int xx = 0; xx < W; ++xx) acc[xx] = 0;
    for (int a = 0; a < kh; ++a) {
        int i = yy - a;
        if (i < 0 || i >= OH) continue;
        for (int b = 0; b < kw; ++b) {
            global const REAL *src = patches + (size_t)((c * kh + a) * kw + b) * columns +
                                     (size_t)s * OH * OW + (size_t)i * OW;
            for (int j = 0; j < OW; ++j) acc[j + b] += src[j];
        }
    }
    for (int xx = 0; xx < W; ++xx) row[xx] = acc[xx];
}

// dx[s, c, yy, xx] = the sum of the patch entries that (yy, xx) went to.
// global size (H * W, n * C)
kernel void conv_col2im(int n, int C, int H, int W, int kh, int kw, int sh, int sw, int OH,
                        int OW, global const REAL *patches, global REAL *dx) {
    int p = get_global_id(0), q = get_global_id(1);
    if (p >= H * W || q >= n * C) return;
    int s = q / C, c = q % C, yy = p / W, xx = p % W;
    const size_t columns = (size_t)n * OH * OW;
    int4 range = windows_covering(yy, xx, kh, kw, sh, sw, OH, OW);
    REAL acc = 0;
    for (int i = range.x; i <= range.y; ++i) {
        int a = yy - i * sh;
        if (a >= kh) continue;
        for (int j = range.z; j <= range.w; ++j) {
            int b = xx - j * sw;
            if (b < kw)
                acc += patches[(size_t)((c * kh + a) * kw + b) * columns +
                               (size_t)s * OH * OW + i * OW + j];
        }
    }
    dx[((size_t)q * H + yy) * W + xx] = acc;
}
