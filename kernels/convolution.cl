// Convolution as Grenade defines it: cross-correlation, no bias. A batch x (n, C, H, W),
// channel-major; K (C * kh * kw, F), row (c * kh + a) * kw + b multiplying x[c, i*sh + a, j*sw + b];
// y (n, F, OH, OW) with (OH - 1) * sh = H - kh, (OW - 1) * sw = W - kw.
//   y[s, f, i, j] = sum_{c, a, b} K[(c*kh + a)*kw + b, f] x[s, c, i*sh + a, j*sw + b]
// The forward pass and the kernel gradient are GEMMs whose patch operand is gathered from x as
// it is read (implicit GEMM: x's patches, r = (c * kh + a) * kw + b as K's rows, are never
// stored). The input delta is a GEMM into patches (gemm.cl's gemm_outer) that a gather (col2im)
// puts back onto the input: every output is written once, by one work-item, so results are
// deterministic.

// The outputs (i0..i1, j0..j1) whose kh x kw windows every (sh, sw) may cover input (yy, xx).
int4 windows_covering(int yy, int xx, int kh, int kw, int sh, int sw, int OH, int OW) {
    return (int4)(max(0, (yy - kh + sh) / sh), min(OH - 1, yy / sh),
                  max(0, (xx - kw + sw) / sw), min(OW - 1, xx / sw));
}

// rows[r] = (c * H + a) * W + b: where patch entry r = (c * kh + a) * kw + b of output (0, 0)
// lies in a sample; output p = (i, j)'s entry lies i * pitch + j * sw later (pitch = sh * W).
// Held as REALs (exact: a sample has fewer than 2^24 values). global size (R)
kernel void conv_row_offsets(int C, int H, int W, int kh, int kw, global REAL *rows) {
    const int r = get_global_id(0);
    if (r < C * kh * kw) rows[r] = ((r / (kh * kw)) * H + r / kw % kh) * W + r % kw;
}

// The kernel of the input delta as a convolution (Convolution.flips): F channels to C filters,
// each plane turned half round: flipped[((f kh + a) kw + b) C + c] = K[((c kh + kh - 1 - a) kw +
// kw - 1 - b) F + f]. A work-item per row of K. global size (C kh kw)
kernel void conv_flip_kernel(int C, int kh, int kw, int F, global const REAL *K,
                             global REAL *flipped) {
    const int r = get_global_id(0);
    if (r >= C * kh * kw) return;
    const int c = r / (kh * kw), turned = kh * kw - 1 - r % (kh * kw);
    for (int f = 0; f < F; ++f)
        flipped[((size_t)f * kh * kw + turned) * C + c] = K[(size_t)r * F + f];
}

// One patch entry's OH x OW values, from its first input `from` on (rows `pitch` apart,
// columns sw apart), into `to`.
void conv_im2col_entry(global const REAL *from, int OH, int OW, int pitch, int sw,
                       global REAL *to) {
    for (int i = 0; i < OH; ++i, from += pitch, to += OW) {
        int j = 0;
        if (sw == 1)
            for (; j + 8 <= OW; j += 8) vstore8(vload8(0, from + j), 0, to + j);
        else if (sw == 2)  // (its loads end before the row's last input that it copies)
            for (; j + 9 <= OW; j += 8) vstore8(vload16(0, from + 2 * j).even, 0, to + j);
        for (; j < OW; ++j) to[j] = from[j * sw];
    }
}

// patches[s, r, i * OW + j] = x_s[rows[r] + i * pitch + j * sw]: x's patches copied out, for
// shapes whose rows do not come in runs of 8 (the GEMMs then read them as whole vectors); with
// `entry_major`, laid out as patches[r, s, i * OW + j] instead (each entry's positions over the
// whole batch in one run). One work-item copies entry r's OH rows of one sample. global size
// (R, n)
kernel void conv_im2col(int n, int sample, int R, int OH, int OW, int pitch, int sw,
                        int entry_major, global const REAL *rows, global const REAL *x,
                        global REAL *patches) {
    const int r = get_global_id(0), s = get_global_id(1);
    const size_t plane = entry_major ? (size_t)r * n + s : (size_t)s * R + r;
    if (r < R && s < n)
        conv_im2col_entry(x + (size_t)s * sample + (int)rows[r], OH, OW, pitch, sw,
                          patches + plane * OH * OW);
}

// The batch's (n, F, P) planes laid out as (F, n, P), each filter's positions over the whole
// batch in one run (`to_filter_major`), or back: to[f, s, p] = from[s, f, p], or to[s, f, p] =
// from[f, s, p]. A work-item copies one plane. global size (F, n)
kernel void conv_swap_planes(int n, int F, int P, int to_filter_major, global const REAL *from,
                             global REAL *to) {
    const int f = get_global_id(0), s = get_global_id(1);
    if (f >= F || s >= n) return;
    const size_t sample_major = ((size_t)s * F + f) * P, filter_major = ((size_t)f * n + s) * P;
    from += to_filter_major ? sample_major : filter_major;
    to += to_filter_major ? filter_major : sample_major;
    for (int p = 0; p < P; ++p) to[p] = from[p];
}

// The implicit GEMMs (conv_forward, conv_kernel_gradient) never store the patches: at stride
// 1 along rows of at least 8 outputs, 8 outputs of a row side by side read one run of
// consecutive inputs, so a vector of `width` outputs of one patch entry (VW, or the kernel
// gradient's DOT_VW) is width / 8 vector loads, or one of fewer than 8. The outputs lie on a
// grid whose rows are OW rounded up to 8 (OH of them), a run from each multiple of 8 (of
// `width`, where fewer); a run reaching past its row's OW outputs is moved back onto the row's
// last ones, its lanes before `from` repeating outputs of the run before it. For the runs q of
// the `width` grid positions from q0: off[q], where its inputs start from the entry's first
// input; at[q], its first output (row OW + column); from[q], its first lane of outputs of its
// own (`run`, none, for a run past the grid, which repeats the last).
void conv_runs(int q0, int OH, int OW, int pitch, int width, int *off, int *at, int *from) {
    const int run = min(8, width), OW8 = (OW + 7) / 8 * 8, Q = OH * OW8;
    for (int q = 0; q < width; q += run) {
        // (a run of fewer than 8, the kernel gradient's in float64 on 256-bit CPUs: the part
        // `part` lanes into one of 8, moved back with it)
        const int g = min(q0 + q, Q - run), part = run < 8 ? g % 8 : 0;
        const int row = g / OW8, col = g % OW8 - part;
        const int back = col - min(col, OW - 8), start = col - back + part;
        off[q] = row * pitch + start;
        at[q] = row * OW + start;
        from[q] = q0 + q < Q ? max(0, back - part) : run;
    }
}

// Grid positions of OH rows of OW outputs (see conv_runs).
int conv_grid(int OH, int OW) { return OH * ((OW + 7) / 8 * 8); }

realv conv_gather(global const REAL *from, const int *off) {
#ifdef REAL_IS_DOUBLE
    return vload8(0, from + off[0]);
#else
    return (float16)(vload8(0, from + off[0]), vload8(0, from + off[8]));
#endif
}

dotv conv_gather_dot(global const REAL *from, const int *off) {
#if DOT_VW == VW
    return conv_gather(from, off);
#else
    return DOT_VLOAD(0, from + off[0]);  // at most 8 lanes: one run
#endif
}

// A vector of VW grid positions of y's plane `out`, run by run (conv_runs' at and from): the
// whole of each run of outputs, those a run moved back repeats included (the same values this
// work-item stored already), but for the work-item's first run (`first`) where it repeats
// any: the caller stores its own lanes of that.
void conv_store_runs(realv v, global REAL *out, const int *at, const int *from, int first) {
#ifdef REAL_IS_DOUBLE
    if (from[0] == 0 || !first && from[0] < 8) vstore8(v, 0, out + at[0]);
#else
    if ((from[0] | from[8]) == 0 && at[8] == at[0] + 8) {  // one run of 16
        vstore16(v, 0, out + at[0]);
        return;
    }
    if (from[0] == 0 || !first && from[0] < 8) vstore8(v.lo, 0, out + at[0]);
    if (from[8] < 8) vstore8(v.hi, 0, out + at[8]);
#endif
}

// y[s, f, p] = sum_r K[r, f] x_s[rows[r] + off(p)]: FM filters x PV vectors of VW grid
// positions (conv_runs) of one sample per work-item, K's rows broadcast as gemm_outer's A, each
// gathered vector used by FM filters; a template as gemm.cl's GEMMs are (conv_forward_6x4,
// conv_forward_8x1, ...). Where F >= FM, a block passing the last filter is moved back onto
// F - FM .. F - 1 and stores only its own filters: K's FM values then lie at fixed offsets from
// one pointer (clamped indexes, each in a register of its own, spilled at FM 10). x (n,
// sample), y (n, F, P), its sample s from y0 + s ys on (ys F P, or a Concat's rows).
// global size (ceil(conv_grid(OH, OW) / (PV VW)), ceil(F / FM), n)
// template $FM $PV: 6 4, 12 2, 10 2, 8 2, 6 2, 5 2, 4 2, 12 1, 10 1, 8 1, 6 1, 5 1, 4 1
kernel void conv_forward_$FMx$PV(int n, int sample, int R, int F, int P, int OW, int pitch,
                                 global const REAL *rows, global const REAL *K,
                                 global const REAL *x, global REAL *y, int y0, int ys) {
    const int q0 = get_global_id(0) * $PV * VW, f0 = get_global_id(1) * $FM;
    const int s = get_global_id(2);
    if (q0 >= conv_grid(P / OW, OW) || f0 >= F || s >= n) return;
    int off[$PV * VW], at[$PV * VW], from[$PV * VW];
    conv_runs(q0, P / OW, OW, pitch, $PV * VW, off, at, from);
    x += (size_t)s * sample;
    const int fb = F >= $FM ? min(f0, F - $FM) : f0;
    int fs[$FM];
    #pragma unroll
    for (int f = 0; f < $FM; ++f) fs[f] = min(fb + f, F - 1);
    realv acc[$FM][$PV];
    #pragma unroll
    for (int f = 0; f < $FM; ++f)
        #pragma unroll
        for (int v = 0; v < $PV; ++v) acc[f][v] = 0;
    if (F >= $FM) {
        for (int r = 0; r < R; ++r) {
            realv b[$PV];
            #pragma unroll
            for (int v = 0; v < $PV; ++v) b[v] = conv_gather(x + (int)rows[r], off + v * VW);
            global const REAL *k = K + (size_t)r * F + fb;
            #pragma unroll
            for (int f = 0; f < $FM; ++f)
                #pragma unroll
                for (int v = 0; v < $PV; ++v) acc[f][v] = fma((realv)(k[f]), b[v], acc[f][v]);
        }
    } else {
        for (int r = 0; r < R; ++r) {
            realv b[$PV];
            #pragma unroll
            for (int v = 0; v < $PV; ++v) b[v] = conv_gather(x + (int)rows[r], off + v * VW);
            global const REAL *k = K + (size_t)r * F;
            #pragma unroll
            for (int f = 0; f < $FM; ++f)
                #pragma unroll
                for (int v = 0; v < $PV; ++v)
                    acc[f][v] = fma((realv)(k[fs[f]]), b[v], acc[f][v]);
        }
    }
    REAL8 first[$FM];  // the first run, where it was moved back: its own lanes, after
    #pragma unroll
    for (int v = 0; v < $PV; ++v) {
        global REAL *out = y + y0 + (size_t)s * ys + (size_t)fb * P;
        #pragma unroll
        for (int f = 0; f < $FM; ++f, out += P) {
#ifdef REAL_IS_DOUBLE
            if (v == 0) first[f] = acc[f][0];
#else
            if (v == 0) first[f] = acc[f][0].lo;
#endif
            if (fb + f >= f0 && fb + f < F)
                conv_store_runs(acc[f][v], out, at + v * VW, from + v * VW, v == 0);
        }
    }
    if (from[0] == 0) return;  // (in a loop not unrolled: FM PV copies of the lanes' loop
    #pragma unroll 1           // doubled PoCL's first launches of the 24 candidates)
    for (int f = max(0, f0 - fb); f < min($FM, F - fb); ++f) {
        global REAL *out = y + y0 + (size_t)s * ys + (size_t)(fb + f) * P + at[0];
        REAL lanes[8];
        vstore8(first[f], 0, lanes);
        for (int l = from[0]; l < 8; ++l) out[l] = lanes[l];
    }
}
// end template

// VW values of a row of `count` (filters) from `at` on: one vector load where the row holds VW
// values from there; a layer of fewer filters than VW (at 0) its `count` values, then zeros.
realv conv_filters_vector(global const REAL *row, int at, int count) {
    if (count >= VW) return VLOAD(0, row + at);
    REAL lanes[VW];
    for (int l = 0; l < VW; ++l) lanes[l] = l < count ? row[l] : 0;
    return VLOAD(0, lanes);
}

// y[s, f, p] = sum_r K[r, f] x_s[rows[r] + off(p)], off(p) = (p / OW) pitch + (p % OW) sw, the
// other way round from conv_forward: PM positions of one sample x FV vectors of VW filters per
// work-item, K's rows loaded as vectors (K is (R, F): a row's filters lie side by side) and each
// input value broadcast, so that no vector of positions is gathered: any stride and plane size.
// For the shapes of `Convolution.planes` (patches copied out before, or rows of conv_forward
// that are not whole runs of 8): the same sums in the same order as gemm_outer's over copied
// patches and conv_forward's, the same bits.
// A vector reaching past F is moved back onto F - VW .. F - 1 and stores only the filters past
// the vectors before it; fewer filters than VW take one vector, K's values past F zeros
// (conv_filters_vector) and not stored. x (n, sample), y (n, F, P).
// global size (ceil(P / PM), ceil(F / (FV VW)), n)
// template $PM $FV: 3 4, 4 4, 4 2, 6 2, 8 2, 6 1, 8 1, 12 1, 16 1
kernel void conv_forward_planes_$PMx$FV(int n, int sample, int R, int F, int P, int OW,
                                        int pitch, int sw, global const REAL *rows,
                                        global const REAL *K, global const REAL *x,
                                        global REAL *y) {
    const int p0 = get_global_id(0) * $PM, f0 = get_global_id(1) * $FV * VW;
    const int s = get_global_id(2);
    if (p0 >= P || f0 >= F || s >= n) return;
    int off[$PM], fv[$FV];
    #pragma unroll
    for (int m = 0; m < $PM; ++m) {
        const int p = min(p0 + m, P - 1);
        off[m] = p / OW * pitch + p % OW * sw;
    }
    #pragma unroll
    for (int v = 0; v < $FV; ++v) fv[v] = max(0, min(f0 + v * VW, F - VW));
    x += (size_t)s * sample;
    realv acc[$PM][$FV];
    #pragma unroll
    for (int m = 0; m < $PM; ++m)
        #pragma unroll
        for (int v = 0; v < $FV; ++v) acc[m][v] = 0;
    for (int r = 0; r < R; ++r) {
        global const REAL *xr = x + (int)rows[r], *k = K + (size_t)r * F;
        realv kv[$FV];
        #pragma unroll
        for (int v = 0; v < $FV; ++v) kv[v] = conv_filters_vector(k, fv[v], F);
        #pragma unroll
        for (int m = 0; m < $PM; ++m) {
            const realv b = (realv)(xr[off[m]]);
            #pragma unroll
            for (int v = 0; v < $FV; ++v) acc[m][v] = fma(b, kv[v], acc[m][v]);
        }
    }
    y += (size_t)s * F * P;
    #pragma unroll
    for (int v = 0; v < $FV; ++v) {
        REAL lanes[$PM][VW];
        #pragma unroll
        for (int m = 0; m < $PM; ++m) VSTORE(acc[m][v], 0, lanes[m]);
        #pragma unroll 1
        for (int l = max(0, f0 + v * VW - fv[v]); l < min(VW, F - fv[v]); ++l)
            #pragma unroll
            for (int m = 0; m < $PM; ++m)
                if (p0 + m < P) y[(size_t)(fv[v] + l) * P + p0 + m] = lanes[m][l];
    }
}
// end template

// dy (n, F, P) laid out positions-major, (n, P, F): each position's filters side by side, as
// conv_kernel_gradient_planes loads them. A work-item copies 8 positions of one sample, a
// vector of each filter's at a time (0.6-0.7x the time of a position's filters at a time).
// global size (ceil(P / 8), n)
kernel void conv_dy_positions(int n, int F, int P, global const REAL *dy, global REAL *to) {
    const int p0 = get_global_id(0) * 8, s = get_global_id(1);
    if (p0 >= P || s >= n) return;
    dy += (size_t)s * F * P + p0;
    to += ((size_t)s * P + p0) * F;
    if (p0 + 8 > P) {
        for (int p = 0; p < P - p0; ++p)
            for (int f = 0; f < F; ++f) to[(size_t)p * F + f] = dy[(size_t)f * P + p];
        return;
    }
    for (int f = 0; f < F; ++f) {
        REAL lanes[8];
        vstore8(vload8(0, dy + (size_t)f * P), 0, lanes);
        #pragma unroll
        for (int p = 0; p < 8; ++p) to[(size_t)p * F + f] = lanes[p];
    }
}

// dK[r, f] = sum_s sum_p x_s[rows[r] + off(p)] dy_s[f, p] (off as conv_forward_planes'), for
// the shapes of conv_forward_planes, from dy laid out positions-major (conv_dy_positions): RM
// patch entries x FV vectors of VW filters per work-item, dy's rows loaded as vectors and each
// input value broadcast, summed over the samples, then the positions, in order: no patches.
// A last vector moved back as there; fewer filters than VW: one vector reading on into the
// next position's (`dyp` has VW values to spare after its last), its lanes past F not stored.
// dK (R, F), K's layout.
// global size (ceil(F / (FV VW)), ceil(R / RM))
// template $RM $FV: 5 4, 3 4, 4 4, 2 4, 6 2, 8 2, 4 2, 12 1, 8 1, 6 1
kernel void conv_kernel_gradient_planes_$RMx$FV(int n, int sample, int R, int F, int P, int OW,
                                                int pitch, int sw, global const REAL *rows,
                                                global const REAL *x, global const REAL *dyp,
                                                global REAL *dk) {
    const int f0 = get_global_id(0) * $FV * VW, r0 = get_global_id(1) * $RM;
    if (r0 >= R || f0 >= F) return;
    int at[$RM], fv[$FV];
    #pragma unroll
    for (int m = 0; m < $RM; ++m) at[m] = (int)rows[min(r0 + m, R - 1)];
    #pragma unroll
    for (int v = 0; v < $FV; ++v) fv[v] = max(0, min(f0 + v * VW, F - VW));
    realv acc[$RM][$FV];
    #pragma unroll
    for (int m = 0; m < $RM; ++m)
        #pragma unroll
        for (int v = 0; v < $FV; ++v) acc[m][v] = 0;
    for (int s = 0; s < n; ++s) {
        global const REAL *xs = x + (size_t)s * sample, *d = dyp + (size_t)s * P * F;
        for (int p = 0; p < P; ++p, d += F) {
            const int off = p / OW * pitch + p % OW * sw;
            realv dv[$FV];
            #pragma unroll
            for (int v = 0; v < $FV; ++v) dv[v] = VLOAD(0, d + fv[v]);
            #pragma unroll
            for (int m = 0; m < $RM; ++m) {
                const realv b = (realv)(xs[at[m] + off]);
                #pragma unroll
                for (int v = 0; v < $FV; ++v) acc[m][v] = fma(b, dv[v], acc[m][v]);
            }
        }
    }
    #pragma unroll
    for (int m = 0; m < $RM; ++m) {
        if (r0 + m >= R) break;
        global REAL *out = dk + (size_t)(r0 + m) * F;
        #pragma unroll
        for (int v = 0; v < $FV; ++v) {
            const int own = f0 + v * VW - fv[v];  // lanes before it: the vector before's
            if (own == 0 && F >= VW) {
                VSTORE(acc[m][v], 0, out + fv[v]);
            } else if (own < VW) {
                REAL lanes[VW];
                VSTORE(acc[m][v], 0, lanes);
                for (int l = own; l < min(VW, F - fv[v]); ++l) out[fv[v] + l] = lanes[l];
            }
        }
    }
}
// end template

// dy (n, F, P) laid out on the grid of conv_runs, (n, F, G) with G the grid's positions
// rounded up to 16: each run's 8 lanes hold the outputs it reads the inputs of, 0 in the
// lanes that repeat outputs of the run before and in those past the grid. dy's sample s from
// d0 + s ds on (ds F P, or a Concat's rows). A work-item copies one plane. global size (F, n)
kernel void conv_dy_runs(int n, int F, int P, int OW, global const REAL *dy, int d0, int ds,
                         global REAL *runs) {
    const int f = get_global_id(0), s = get_global_id(1);
    if (f >= F || s >= n) return;
    const int OH = P / OW, grid = conv_grid(OH, OW), G = (grid + 15) / 16 * 16;
    global const REAL *from = dy + d0 + (size_t)s * ds + (size_t)f * P;
    global REAL *to = runs + ((size_t)s * F + f) * G;
    for (int q0 = 0; q0 < grid; q0 += 8) {
        int off[8], at[8], own[8];
        conv_runs(q0, OH, OW, OW, 8, off, at, own);
        for (int l = 0; l < 8; ++l) to[q0 + l] = l < own[0] ? 0 : from[at[0] + l];
    }
    for (int q = grid; q < G; ++q) to[q] = 0;
}

// dK[r, f] = sum_s sum_p x_s[rows[r] + off(p)] dy[s, f, p]: RM patch entries x FN filters per
// work-item, sample by sample (so the sum's order is fixed: no atomics), over vectors of DOT_VW
// grid positions (conv_runs), as gemm_dot's. dy (n, F, G) is laid out on the grid (see
// conv_dy_runs; dy itself where output rows are whole runs and P a multiple of 16): its zeros
// drop the lanes that repeat outputs and those past the grid (a mask in the loop, or a second
// loop for such vectors, took LeNet's kernel gradients 1.2-4x the time). Over chunks of `per`
// samples (global id 2: chunk c, samples c per .. c per + per - 1, its sums into dK + c R F;
// gemm_sum_chunks adds them up): where R F outputs are too few work-items for a GPU. One chunk
// (per = n): dK itself.
// global size (ceil(F / FN), ceil(R / RM), ceil(n / per))
// template $RM $FN: 5 4, 4 4, 2 8, 8 2, 5 2, 2 2, 4 1, 3 2, 4 3, 6 2, 3 4, 6 4, 8 3
kernel void conv_kernel_gradient_$RMx$FN(int n, int sample, int R, int F, int P, int OW,
                                         int pitch, global const REAL *rows,
                                         global const REAL *x, global const REAL *dy,
                                         global REAL *dK, int per) {
    const int f0 = get_global_id(0) * $FN, r0 = get_global_id(1) * $RM;
    if (f0 >= F || r0 >= R) return;
    const int OH = P / OW, G = (conv_grid(OH, OW) + 15) / 16 * 16;
    const int first = get_global_id(2) * per;
    n = min(n - first, per);
    x += (size_t)first * sample;
    dy += (size_t)first * F * G;
    dK += (size_t)get_global_id(2) * R * F;
    int at[$RM], fs[$FN];
    #pragma unroll
    for (int r = 0; r < $RM; ++r) at[r] = (int)rows[min(r0 + r, R - 1)];
    #pragma unroll
    for (int f = 0; f < $FN; ++f) fs[f] = min(f0 + f, F - 1);
    dotv acc[$RM][$FN];
    #pragma unroll
    for (int r = 0; r < $RM; ++r)
        #pragma unroll
        for (int f = 0; f < $FN; ++f) acc[r][f] = 0;
    for (int s = 0; s < n; ++s) {
        global const REAL *xs = x + (size_t)s * sample, *d = dy + (size_t)s * F * G;
        for (int q0 = 0; q0 < G; q0 += DOT_VW) {
            int off[DOT_VW], pos[DOT_VW], own[DOT_VW];
            conv_runs(q0, OH, OW, pitch, DOT_VW, off, pos, own);
            dotv a[$RM], b[$FN];
            #pragma unroll
            for (int r = 0; r < $RM; ++r) a[r] = conv_gather_dot(xs + at[r], off);
            #pragma unroll
            for (int f = 0; f < $FN; ++f) b[f] = DOT_VLOAD(0, d + (size_t)fs[f] * G + q0);
            #pragma unroll
            for (int r = 0; r < $RM; ++r)
                #pragma unroll
                for (int f = 0; f < $FN; ++f) acc[r][f] = fma(a[r], b[f], acc[r][f]);
        }
    }
    for (int r = 0; r < min($RM, R - r0); ++r)
        for (int f = 0; f < min($FN, F - f0); ++f)
            dK[(size_t)(r0 + r) * F + f0 + f] = dot_hsum(acc[r][f]);
}
// end template

#ifdef REAL_IS_DOUBLE
typedef long8 lanev;
#define LANES (lanev)(0, 1, 2, 3, 4, 5, 6, 7)
#else
typedef int16 lanev;
#define LANES (lanev)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#endif

// Stride 1: row yy of input channels c .. c + 3 of one sample (those under C), VW columns xx
// at a time: for each kernel offset (a, b), the run of OW patch entries of output row yy - a
// lands on columns b .. b + OW - 1, so one vector load from b columns before the run, its lanes
// outside the run masked, adds it to every column of the vector. The four channels' sums are
// independent chains (one add waits on the one before), run side by side; a channel past C
// repeats channel C - 1 and is not stored. `patches` (C kh kw, OH OW), the sample's (its patch
// entries together) with VW values to spare after them: a load reads at most VW - 2 past the
// last run, and never before the buffer (the run of entry b starts b (P - 1) after entry 0's).
// `dx` the sample's (C, H, W).
#define COL2IM_CHANNELS 4
// (`entry`: the values from one patch entry's positions to the next entry's, P; entry-major
// patches, (R, n, P) from the sample's first, n P.)
void conv_col2im_rows4_at(int c, int yy, int C, int H, int W, int kh, int kw, int OH, int OW,
                          global const REAL *patches, size_t entry, global REAL *dx) {
    const size_t P = entry;
    const int a0 = max(0, yy - OH + 1), a1 = min(kh - 1, yy);
    global const REAL *plane[COL2IM_CHANNELS];
    #pragma unroll
    for (int k = 0; k < COL2IM_CHANNELS; ++k)
        plane[k] = patches + (size_t)min(c + k, C - 1) * kh * kw * P;
    for (int x0 = 0; x0 < W; x0 += VW) {
        realv acc[COL2IM_CHANNELS];
        #pragma unroll
        for (int k = 0; k < COL2IM_CHANNELS; ++k) acc[k] = 0;
        for (int a = a0; a <= a1; ++a) {
            const size_t run = (size_t)a * kw * P + (yy - a) * OW + x0;
            for (int b = 0; b < kw; ++b) {
                lanev j = LANES + (x0 - b);
                #pragma unroll
                for (int k = 0; k < COL2IM_CHANNELS; ++k)
                    acc[k] += select((realv)0, VLOAD(0, plane[k] + run + (size_t)b * P - b),
                                     (j >= 0) & (j < OW));
            }
        }
        #pragma unroll
        for (int k = 0; k < COL2IM_CHANNELS; ++k) {
            if (c + k >= C) break;
            global REAL *row = dx + ((size_t)(c + k) * H + yy) * W;
            if (x0 + VW <= W) {
                VSTORE(acc[k], 0, row + x0);
            } else {
                REAL lanes[VW];
                VSTORE(acc[k], 0, lanes);
                for (int l = 0; l < W - x0; ++l) row[x0 + l] = lanes[l];
            }
        }
    }
}

void conv_col2im_rows4(int c, int yy, int C, int H, int W, int kh, int kw, int OH, int OW,
                       global const REAL *patches, global REAL *dx) {
    conv_col2im_rows4_at(c, yy, C, H, W, kh, kw, OH, OW, patches, (size_t)OH * OW, dx);
}

// Groups of COL2IM_CHANNELS channels by rows: global size (n ceil(C / 4) H). `entry_major`:
// patches (R, n, P), as conv_im2col writes them so, with VW values to spare after them.
kernel void conv_col2im_rows(int n, int C, int H, int W, int kh, int kw, int OH, int OW,
                             int entry_major, global const REAL *patches, global REAL *dx) {
    const int g = get_global_id(0), groups = (C + COL2IM_CHANNELS - 1) / COL2IM_CHANNELS;
    if (g >= n * groups * H) return;
    const int s = g / (groups * H), q = g % (groups * H);
    const size_t P = (size_t)OH * OW;
    conv_col2im_rows4_at(q / H * COL2IM_CHANNELS, q % H, C, H, W, kh, kw, OH, OW,
                         patches + (entry_major ? s * P : s * C * kh * kw * P),
                         entry_major ? n * P : P, dx + (size_t)s * C * H * W);
}

// The input delta at stride 1 in one launch, a work-group per sample s: its patches K dy_s
// (R, P) into its part of `patches` (R P + VW values from s (R P + VW): the col2im's loads past
// its last run stay in the sample's own part) in blocks of RM rows x CV vectors (gemm_outer's
// sums), then dx_s from them, a row of 4 channels at a time (conv_col2im_rows' sums): the same
// bits as those two launches, with the sample's patches still in the core's cache when they are
// read back. global size (L n), local (L).
// template $RM $CV: 8 1, 6 2, 12 1, 16 1, 4 1, 6 1
kernel void conv_input_delta_$RMx$CV(int C, int H, int W, int kh, int kw, int OH, int OW,
                                     int F, global const REAL *K, global const REAL *dy,
                                     global REAL *patches, global REAL *dx) {
    const int s = get_group_id(0), lid = get_local_id(0), L = get_local_size(0);
    const int R = C * kh * kw, P = OH * OW, across = (P + $CV * VW - 1) / ($CV * VW);
    global REAL *own = patches + (size_t)s * (R * P + VW);
    for (int q = lid; q < (R + $RM - 1) / $RM * across; q += L)
        gemm_outer_block_$RMx$CV(q / across * $RM, q % across * $CV * VW, R, P, F, K, F, 1,
                                 dy + (size_t)s * F * P, P, own, P, 0);
    barrier(CLK_GLOBAL_MEM_FENCE);
    const int groups = (C + COL2IM_CHANNELS - 1) / COL2IM_CHANNELS;
    for (int q = lid; q < groups * H; q += L)
        conv_col2im_rows4(q / H * COL2IM_CHANNELS, q % H, C, H, W, kh, kw, OH, OW, own,
                          dx + (size_t)s * C * H * W);
}
// end template

// The input delta at stride 1 of the implicit GEMMs (output rows of 8 or more), without
// the patches buffer, from dy on the grid of conv_runs (each row's runs of 8, the last moved
// back onto the row's end with zeros in the lanes it repeats: conv_dy_runs' layout, G values a
// plane; dy itself, G = P, where rows are whole runs): a work-item per (sample s,
// SCATTER_CHANNELS input channels c), global
// size (ceil(C / SCATTER_CHANNELS) n), in work-groups of one (the fastest of 1, 4 and 16 at
// most shapes tried). For each kernel offset (a, b) in order, the patch entries r = (c, a, b)'s
// sums over the filters, in order, of K[r, f] dy_s[f] (SCATTER_VECTORS vectors of
// SCATTER_LANES positions side by side, in registers, each dy vector read once for every
// channel) are added onto dx_s[c] at rows i + a, columns j + b, a run of 8 at a time. Each dx
// value so takes the same terms in the same order as conv_col2im_rows4 takes them from
// gemm_outer's patches (every sum from 0, K dy by fma in filter order; then the offsets' in
// order of a, then b): the bits of
// conv_input_delta, 1.2-1.4x faster at LeNet's second layer on AVX2, the two taking turns with
// 8 MB swept through the caches between runs (F = 16: too few terms per patch entry to pay for
// a GEMM block's set-up and the patches' round trip through memory). At LeNet's second layer
// (batch 64 and 128, and 16 input channels at 64; float32 and float64), against one channel
// of 8 runs of 8 values: on an AVX-512 EPYC 3 channels of 4 vectors of VW lanes ran 1.5-1.9x
// as fast (2 channels at 0.88-0.97x the speed of 3, 4 at 0.93-1.04x). On 256-bit CPUs (an AVX2
// EPYC, Zen 3) a vector is one run of 8 values: in float32 2 channels of 4 such vectors (one
// register each) took 0.84-0.97x the time of 2 channels of 2 vectors of 16 (two registers
// each; caches warm or swept; batch 32, 64, 128), 1 channel of 8 runs 0.93-1.15x; more
// channels or vectors spill (3 of 4: 1.21-1.34x, 2 of 8: 1.34-1.40x). In float64 (a run two
// registers) 2 channels of 2 runs were the fastest of 9 (1 of 4: 1.03-1.13x its time).
#if DOT_VW < VW  // vectors of one run of 8 (SCATTER_LANES)
#define SCATTER_CHANNELS 2
#ifdef REAL_IS_DOUBLE
#define SCATTER_VECTORS 2
#else
#define SCATTER_VECTORS 4
#endif
#define SCATTER_LANES 8
#else
#define SCATTER_CHANNELS 3
#define SCATTER_VECTORS 4
#define SCATTER_LANES VW
#endif
#if SCATTER_LANES == 8
typedef REAL8 scatv;
#define SCATTER_LOAD vload8
#define SCATTER_RUN(t, q) (t)
#else
typedef realv scatv;
#define SCATTER_LOAD VLOAD
#define SCATTER_RUN(t, q) ((q) ? (t).hi : (t).lo)  // run q of a vector's two
#endif

// Runs `first` and on (SCATTER_LANES / 8 of them) of 8 values from `from`, those past `last`
// repeating it.
scatv scatter_runs(global const REAL *from, int first, int last) {
#if SCATTER_LANES == 8
    return vload8(min(first, last), from);
#else
    return (scatv)(vload8(min(first, last), from), vload8(min(first + 1, last), from));
#endif
}

kernel void conv_scatter_delta(int n, int C, int H, int W, int kh, int kw, int OH, int OW,
                               int F, int G, global const REAL *K, global const REAL *dy,
                               global REAL *dx) {
    const int groups = (C + SCATTER_CHANNELS - 1) / SCATTER_CHANNELS;
    const int c0 = get_global_id(0) % groups * SCATTER_CHANNELS, s = get_global_id(0) / groups;
    if (s >= n) return;
    const int across = (OW + 7) / 8, units = OH * across, per = SCATTER_LANES / 8;
    const int block = SCATTER_VECTORS * per;  // runs of 8 a block of sums covers
    global REAL *planes[SCATTER_CHANNELS];
    int cs[SCATTER_CHANNELS];
    #pragma unroll
    for (int e = 0; e < SCATTER_CHANNELS; ++e) {
        cs[e] = min(c0 + e, C - 1);  // a channel past C repeats the last and is not stored
        planes[e] = dx + ((size_t)s * C + cs[e]) * H * W;
    }
    for (int e = 0; e < min(SCATTER_CHANNELS, C - c0); ++e)
        for (int q = 0; q < H * W; ++q) planes[e][q] = 0;
    global const REAL *d = dy + (size_t)s * F * G;
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b) {
            global const REAL *k[SCATTER_CHANNELS];
            #pragma unroll
            for (int e = 0; e < SCATTER_CHANNELS; ++e)
                k[e] = K + (size_t)((cs[e] * kh + a) * kw + b) * F;
            for (int u0 = 0; u0 < units; u0 += block) {
                global const REAL *du = d + (size_t)u0 * 8;
                const int full = min(block, units - u0);
                scatv t[SCATTER_CHANNELS][SCATTER_VECTORS];
                #pragma unroll
                for (int e = 0; e < SCATTER_CHANNELS; ++e)
                    #pragma unroll
                    for (int v = 0; v < SCATTER_VECTORS; ++v) t[e][v] = 0;
                if (full == block) {  // (the offsets constant: no registers for them)
                    for (int f = 0; f < F; ++f) {
                        scatv g[SCATTER_VECTORS];
                        #pragma unroll
                        for (int v = 0; v < SCATTER_VECTORS; ++v)
                            g[v] = SCATTER_LOAD(v, du + (size_t)f * G);
                        #pragma unroll
                        for (int e = 0; e < SCATTER_CHANNELS; ++e)
                            #pragma unroll
                            for (int v = 0; v < SCATTER_VECTORS; ++v)
                                t[e][v] = fma((scatv)k[e][f], g[v], t[e][v]);
                    }
                } else {  // the last runs: those past it repeat the last and are not added
                    for (int f = 0; f < F; ++f) {
                        scatv g[SCATTER_VECTORS];
                        #pragma unroll
                        for (int v = 0; v < SCATTER_VECTORS; ++v)
                            g[v] = scatter_runs(du + (size_t)f * G, v * per, full - 1);
                        #pragma unroll
                        for (int e = 0; e < SCATTER_CHANNELS; ++e)
                            #pragma unroll
                            for (int v = 0; v < SCATTER_VECTORS; ++v)
                                t[e][v] = fma((scatv)k[e][f], g[v], t[e][v]);
                    }
                }
                #pragma unroll
                for (int e = 0; e < SCATTER_CHANNELS; ++e) {
                    if (c0 + e >= C) break;
                    int i = u0 / across, j = u0 % across * 8;
                    #pragma unroll
                    for (int v = 0; v < SCATTER_VECTORS; ++v)
                        #pragma unroll
                        for (int q = 0; q < per; ++q) {
                            global REAL *row = planes[e] + (i + a) * W + min(j, OW - 8) + b;
                            if (v * per + q < full)  // (a run moved back adds 0 where it repeats)
                                vstore8(vload8(0, row) + SCATTER_RUN(t[e][v], q), 0, row);
                            j += 8;
                            i += j == across * 8;
                            j = j == across * 8 ? 0 : j;
                        }
                }
            }
        }
}

// Row yy of one channel, its columns x0, x0 + sw, ... (x0 < sw), 8 at a time, blocks `first`
// .. `last` - 1 of them: each lane the sum of the patch entries its input went to, in the
// windows' order (rows, then columns, ascending; the kernel columns b of the phase,
// descending), a lane whose window does not exist adding an exact zero. `plane`: the
// channel's (kh kw, OH OW) patch entries, with 8 values to spare after it (a load passes its
// end by at most 7; none starts before it: b P >= b >= -j0). Stores to row[x0 + t sw].
#ifdef REAL_IS_DOUBLE
#define CONV_MASK8(m) convert_long8(m)
#else
#define CONV_MASK8(m) (m)
#endif
void conv_col2im_blocks(int yy, int x0, int first, int last, int W, int kh, int kw, int sh,
                        int sw, int OH, int OW, global const REAL *plane, global REAL *row) {
    const int P = OH * OW, i0 = max(0, (yy - kh + sh) / sh), i1 = min(OH - 1, yy / sh);
    const int top = x0 < kw ? x0 + (kw - 1 - x0) / sw * sw : -1;  // the phase's last column
    for (int xs = x0 + first * 8 * sw; xs < min(W, x0 + last * 8 * sw); xs += 8 * sw) {
        REAL8 acc = 0;
        for (int i = i0; i <= i1; ++i) {
            const int a = yy - i * sh;
            if (a >= kh) continue;
            for (int b = top; b >= 0; b -= sw) {
                const int j0 = (xs - b) / sw;  // exact: b and xs are of the phase
                const int8 j = (int8)(0, 1, 2, 3, 4, 5, 6, 7) + j0;
                acc += select((REAL8)0,
                              vload8(0, plane + (size_t)(a * kw + b) * P + i * OW + j0),
                              CONV_MASK8((j >= 0) & (j < OW)));
            }
        }
        REAL lanes[8];
        vstore8(acc, 0, lanes);
        for (int t = 0; t < 8 && xs + t * sw < W; ++t) row[xs + t * sw] = lanes[t];
    }
}

// All of the row's phase x0.
void conv_col2im_phase(int yy, int x0, int W, int kh, int kw, int sh, int sw, int OH, int OW,
                       global const REAL *plane, global REAL *row) {
    conv_col2im_blocks(yy, x0, 0, (W + 8 * sw - 1) / (8 * sw), W, kh, kw, sh, sw, OH, OW, plane,
                       row);
}

// dx[s, c, yy, xx] = the sum of the patch entries that (yy, xx) went to; patches (n, R, P) as
// conv_col2im_rows reads them, with 8 values to spare after them. A work-item per row yy of a
// channel of a sample and phase x0 of its columns (conv_col2im_phase), or with `split` (GPUs,
// whose work-items are many and narrow) per block of 8 of that phase's columns:
// global size (sw H B, n C), B the blocks of a phase (1 unsplit).
kernel void conv_col2im(int n, int C, int H, int W, int kh, int kw, int sh, int sw, int OH,
                        int OW, global const REAL *patches, global REAL *dx, int split) {
    const int blocks = (W + 8 * sw - 1) / (8 * sw), B = split ? blocks : 1;
    const int q = get_global_id(0) / B, b = get_global_id(0) % B, g = get_global_id(1);
    if (q >= sw * H || g >= n * C) return;
    conv_col2im_blocks(q / sw, q % sw, split ? b : 0, split ? b + 1 : blocks, W, kh, kw, sh, sw,
                       OH, OW, patches + (size_t)g * kh * kw * OH * OW,
                       dx + ((size_t)g * H + q / sw) * W);
}

// -- One example by direct loops: the fused per-example loop (grenade_py.fused) --------------
// The products of conv_forward, the input delta and conv_kernel_gradient for one sample,
// summed in the loops' order rather than the GEMMs': K (R, F) with row (c kh + a) kw + b,
// x (C, H, W), y and dy (F, OH, OW).

// Output rows i0 .. i0 + 3 and columns j0 .. j0 + 7 of filters f0 and f0 + 1 (the last filter
// alone where f0 is), into y (F, OH, OW): y[f, i, j] = sum over (c, a, b) of
// k[c kc + a ka + b kb + f kf] x[c, i sh + a, j + b] (K's order: kc = kh kw F, ka = kw F,
// kb = F, kf = 1; conv_direct_delta_block's: K turned round and transposed). Rows of 8 or more
// outputs, 4 or more rows, column stride 1: a vector of 8 columns in each of 4 rows, each
// read once for both filters, and each kernel value once for 4 vectors: 8 independent sums
// held in registers (every count is fixed; a filter a block, 4 rows x 16 columns, ran 1.5x
// slower, reading a vector per multiply-add). A block reaching past the plane is moved back
// onto it and stores only its own outputs (those from i0, j0 on).
void conv_direct_block(int C, int H, int W, int kh, int kw, int sh, int F, int OH, int OW,
                       global const REAL *k, int kc, int ka, int kb, int kf,
                       global const REAL *x, int f0, int i0, int j0, global REAL *y) {
    const int f1 = min(f0 + 1, F - 1), i1 = min(i0, OH - 4), at = min(j0, OW - 8);
    REAL8 s0 = 0, s1 = 0, s2 = 0, s3 = 0, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    for (int c = 0; c < C; ++c)
        for (int a = 0; a < kh; ++a) {
            global const REAL *r0 = x + ((size_t)c * H + i1 * sh + a) * W + at;
            global const REAL *r1 = r0 + sh * W, *r2 = r1 + sh * W, *r3 = r2 + sh * W;
            global const REAL *kv = k + c * kc + a * ka;
            for (int b = 0; b < kw; ++b) {
                const REAL k0 = kv[b * kb + f0 * kf], k1 = kv[b * kb + f1 * kf];
                const REAL8 x0 = vload8(0, r0 + b), x1 = vload8(0, r1 + b);
                const REAL8 x2 = vload8(0, r2 + b), x3 = vload8(0, r3 + b);
                s0 += k0 * x0;
                t0 += k1 * x0;
                s1 += k0 * x1;
                t1 += k1 * x1;
                s2 += k0 * x2;
                t2 += k1 * x2;
                s3 += k0 * x3;
                t3 += k1 * x3;
            }
        }
    const REAL8 sums[2][4] = {{s0, s1, s2, s3}, {t0, t1, t2, t3}};
    for (int e = 0; e < 1 + (f1 > f0); ++e)
        for (int r = i0 - i1; r < 4; ++r) {
            global REAL *row = y + ((size_t)(f0 + e) * OH + i1 + r) * OW + at;
            if (at == j0) {
                vstore8(sums[e][r], 0, row);
            } else {
                REAL lanes[8];
                vstore8(sums[e][r], 0, lanes);
                for (int l = j0 - at; l < 8; ++l) row[l] = lanes[l];
            }
        }
}

// Output row i of filter f, column by column: any stride, any width.
void conv_direct_row(int C, int H, int W, int F, int kh, int kw, int sh, int sw, int OW,
                     global const REAL *k, global const REAL *x, int f, int i,
                     global REAL *y) {
    global REAL *out = y + (size_t)i * OW;
    for (int j = 0; j < OW; ++j) out[j] = 0;
    for (int c = 0; c < C; ++c)
        for (int a = 0; a < kh; ++a) {
            global const REAL *row = x + ((size_t)c * H + i * sh + a) * W;
            for (int b = 0; b < kw; ++b) {
                const REAL kv = k[(size_t)((c * kh + a) * kw + b) * F + f];
                for (int j = 0; j < OW; ++j) out[j] += kv * row[j * sw + b];
            }
        }
}

// Input plane c of the delta: each output's K dy put back on the inputs its window read, the
// windows in order (a plane is one work-item's: no atomics).
void conv_direct_delta_plane(int C, int H, int W, int F, int kh, int kw, int sh, int sw,
                             int OH, int OW, global const REAL *k, global const REAL *dy,
                             int c, global REAL *dx) {
    global REAL *plane = dx + (size_t)c * H * W;
    for (int p = 0; p < H * W; ++p) plane[p] = 0;
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b)
            for (int f = 0; f < F; ++f) {
                const REAL kv = k[(size_t)((c * kh + a) * kw + b) * F + f];
                for (int i = 0; i < OH; ++i) {
                    global REAL *row = plane + (i * sh + a) * W + b;
                    global const REAL *g = dy + ((size_t)f * OH + i) * OW;
                    for (int j = 0; j < OW; ++j) row[j * sw] += kv * g[j];
                }
            }
}

// Stride 1: the input delta is the "full" correlation of dy with K turned round, dx[c, y, x]
// = sum over (f, a, b) of K[(c kh + a) kw + b, f] dy[f, y - a, x - b]: conv_direct_block over
// dy padded with kh - 1 rows and kw - 1 columns of zeros all round (`padded`, F planes of
// (H + kh - 1) x (W + kw - 1)), K read from its last (a, b) back. Rows i0 .. i0 + 3 and
// columns j0 .. j0 + 7 of input planes c and c + 1 (of C).
void conv_direct_delta_block(int C, int H, int W, int F, int kh, int kw,
                             global const REAL *k, global const REAL *padded, int c, int i0,
                             int j0, global REAL *dx) {
    conv_direct_block(F, H + kh - 1, W + kw - 1, kh, kw, 1, C, H, W,
                      k + ((kh - 1) * kw + kw - 1) * F, 1, -kw * F, -F, kh * kw * F, padded, c,
                      i0, j0, dx);
}

// dK[(c kh + a) kw + b, f] for b = b0 .. b0 + 7 (those below kw), into g: the sums over
// positions (i, j) of dy[f, i, j] x[c, i sh + a, j sw + b], column by column (any stride, any
// width; conv_direct_kernel_block takes rows of 8 or more at stride 1).
void conv_direct_kernel_grads(int H, int W, int kh, int kw, int sh, int sw, int OH, int OW,
                              global const REAL *x, global const REAL *dy, int c, int a, int f,
                              int b0, REAL *g) {
    const int count = min(8, kw - b0);
    for (int b = 0; b < count; ++b) g[b] = 0;
    for (int i = 0; i < OH; ++i) {
        global const REAL *gr = dy + ((size_t)f * OH + i) * OW;
        global const REAL *row = x + ((size_t)c * H + i * sh + a) * W + b0;
        for (int j = 0; j < OW; ++j)
            for (int b = 0; b < count; ++b) g[b] += gr[j] * row[j * sw + b];
    }
}

// The same sums for f = f0, f0 + 1 and b = b0 .. b0 + nb - 1 (nb <= 8, a constant: the sums
// stay in registers), into g[b - b0] and g[8 + b - b0]; filters and columns past the kernel's
// are computed again from its last (the caller stores those it owns). Column stride 1, rows
// of 8 or more outputs: each row in vectors of 8, its last ending at its end with the
// columns the one before summed masked off; dy read once for all nb columns of the kernel.
#define KERNEL_SUMS(l) REAL8 s0_##l = 0, s1_##l = 0;
#define KERNEL_STEP(l)                                                                        \
    if (l < nb) {                                                                             \
        const REAL8 xl = vload8(0, row + at + min(b0 + l, kw - 1));                           \
        s0_##l += g0 * xl;                                                                    \
        s1_##l += g1 * xl;                                                                    \
    }
#define KERNEL_STORE(l)                                                                       \
    if (l < nb) {                                                                             \
        const REAL4 h0 = s0_##l.lo + s0_##l.hi, h1 = s1_##l.lo + s1_##l.hi;                   \
        g[l] = (h0.x + h0.y) + (h0.z + h0.w);                                                 \
        g[8 + l] = (h1.x + h1.y) + (h1.z + h1.w);                                             \
    }
void conv_direct_kernel_block(int H, int W, int kh, int kw, int sh, int F, int OH, int OW,
                              int nb, global const REAL *x, global const REAL *dy, int c,
                              int a, int f0, int b0, REAL *g) {
    const int f1 = min(f0 + 1, F - 1), vectors = (OW + 7) / 8;
    const REAL8 mask = clamp((REAL8)(0, 1, 2, 3, 4, 5, 6, 7) + (REAL)(OW - 8 * vectors + 1),
                             (REAL)0, (REAL)1);
    // Named sums, not an array: the compiler keeps them in registers.
    KERNEL_SUMS(0) KERNEL_SUMS(1) KERNEL_SUMS(2) KERNEL_SUMS(3)
    KERNEL_SUMS(4) KERNEL_SUMS(5) KERNEL_SUMS(6) KERNEL_SUMS(7)
    for (int i = 0; i < OH; ++i) {
        global const REAL *d0 = dy + ((size_t)f0 * OH + i) * OW;
        global const REAL *d1 = dy + ((size_t)f1 * OH + i) * OW;
        global const REAL *row = x + ((size_t)c * H + i * sh + a) * W;
        for (int v = 0; v < vectors; ++v) {
            const int at = min(8 * v, OW - 8);
            REAL8 g0 = vload8(0, d0 + at), g1 = vload8(0, d1 + at);
            if (v == vectors - 1) {
                g0 *= mask;
                g1 *= mask;
            }
            KERNEL_STEP(0) KERNEL_STEP(1) KERNEL_STEP(2) KERNEL_STEP(3)
            KERNEL_STEP(4) KERNEL_STEP(5) KERNEL_STEP(6) KERNEL_STEP(7)
        }
    }
    KERNEL_STORE(0) KERNEL_STORE(1) KERNEL_STORE(2) KERNEL_STORE(3)
    KERNEL_STORE(4) KERNEL_STORE(5) KERNEL_STORE(6) KERNEL_STORE(7)
}
