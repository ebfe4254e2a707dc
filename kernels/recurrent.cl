// Recurrent layers over whole sequences (Grenade.Recurrent): B independent sequences of T steps,
// rows time-major (row t * B + s is step t of sequence s). Each step kernel runs one work-group
// per sequence and loops over the steps with a barrier between them, so a sequence's recurrence
// is one launch. `states` ((T + 1) * B, n) holds each step's incoming recurrent state: rows
// 0 .. B - 1 are the states the sequences start from, and step t writes row (t + 1) * B + s.

// -- LSTM (Grenade.Recurrent.Layers.LSTM): the state is the cell c; gates f, i, o, c ---------

// One unit r of one step: zr (4 o) holds W x on entry, the gates' values f, i, o, g on exit;
// prev and next: the cell before and after the step; hr: the output o * c.
void lstm_unit_forward(int o, int r, global const REAL *ut, global const REAL *b,
                       global REAL *zr, global const REAL *prev, global REAL *next,
                       global REAL *hr) {
    REAL sf = 0, si = 0, so = 0;
    for (int k = 0; k < o; ++k) {
        global const REAL *u = ut + (size_t)k * 3 * o + r;
        const REAL ck = prev[k];
        sf += u[0] * ck;
        si += u[o] * ck;
        so += u[2 * o] * ck;
    }
    const REAL f = logit_forward_at(b[r] + zr[r] + sf),
               i = logit_forward_at(b[o + r] + zr[o + r] + si),
               og = logit_forward_at(b[2 * o + r] + zr[2 * o + r] + so),
               g = tanh(b[3 * o + r] + zr[3 * o + r]);
    const REAL cell = f * prev[r] + i * g;
    zr[r] = f;
    zr[o + r] = i;
    zr[2 * o + r] = og;
    zr[3 * o + r] = g;
    next[r] = cell;
    hr[r] = og * cell;
}

// Vectors of 8 units per work-item of the step kernels: each work-item sums U c- (or U^T d)
// for that many vectors at once. A single sum is a chain of dependent FMAs, each waiting on the
// last one's latency; independent chains side by side keep the FMA units busy. Every sum still
// adds its terms in the same order, so the results are those of one sum at a time.
#define LSTM_VECTORS 4

// Forward (runRecurrentForwards). z (T * B, 4 o): on entry W x for f, i, o, c; on exit the
// gates' values f, i, o and g = tanh (the tape). ut (o, 3 o): U_f, U_i, U_o transposed, side by
// side, so that each lane adds U c- for 8 consecutive units as vectors: c- broadcast, U^T's
// rows contiguous. b (4 o): the biases. h: o * c. Units past the last whole vector of 8 take
// lstm_unit_forward's scalar form.
kernel void lstm_forward_steps(int T, int B, int o, global const REAL *ut,
                               global const REAL *b, global REAL *z, global REAL *c,
                               global REAL *h) {
    const int s = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    const int span = 8 * LSTM_VECTORS;
    for (int t = 0; t < T; ++t) {
        const size_t row = (size_t)t * B + s;
        global const REAL *prev = c + row * o;
        global REAL *zr = z + row * 4 * o, *next = c + (row + B) * o, *hr = h + row * o;
        for (int r0 = lid * span; r0 < o; r0 += nl * span) {
            const int whole = min(LSTM_VECTORS, (o - r0) / 8);
            REAL8 sf[LSTM_VECTORS], si[LSTM_VECTORS], so[LSTM_VECTORS];
            #pragma unroll
            for (int j = 0; j < LSTM_VECTORS; ++j) sf[j] = si[j] = so[j] = 0;
#define LSTM_SUMS(vectors)                                                                    \
            for (int k = 0; k < o; ++k) {                                                     \
                global const REAL *u = ut + (size_t)k * 3 * o + r0;                           \
                const REAL ck = prev[k];                                                      \
                _Pragma("unroll")                                                             \
                for (int j = 0; j < LSTM_VECTORS; ++j) {                                      \
                    if (j < (vectors)) {                                                      \
                        sf[j] += vload8(j, u) * ck;                                           \
                        si[j] += vload8(j, u + o) * ck;                                       \
                        so[j] += vload8(j, u + 2 * o) * ck;                                   \
                    }                                                                         \
                }                                                                             \
            }
            if (whole == LSTM_VECTORS) {  // the vectors' count known: no test per term
                LSTM_SUMS(LSTM_VECTORS)
            } else {
                LSTM_SUMS(whole)
            }
#undef LSTM_SUMS
            for (int j = 0; j < whole; ++j) {
                const int r = r0 + 8 * j;
                const REAL8 f = 1 / (1 + exp(-(vload8(0, b + r) + vload8(0, zr + r) + sf[j]))),
                            i = 1 / (1 + exp(-(vload8(0, b + o + r) + vload8(0, zr + o + r)
                                               + si[j]))),
                            og = 1 / (1 + exp(-(vload8(0, b + 2 * o + r)
                                                + vload8(0, zr + 2 * o + r) + so[j]))),
                            g = tanh(vload8(0, b + 3 * o + r) + vload8(0, zr + 3 * o + r));
                const REAL8 cell = f * vload8(0, prev + r) + i * g;
                vstore8(f, 0, zr + r);
                vstore8(i, 0, zr + o + r);
                vstore8(og, 0, zr + 2 * o + r);
                vstore8(g, 0, zr + 3 * o + r);
                vstore8(cell, 0, next + r);
                vstore8(og * cell, 0, hr + r);
            }
            for (int r = r0 + 8 * whole; r < min(o, r0 + span); ++r)
                lstm_unit_forward(o, r, ut, b, zr, prev, next, hr);
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

// One unit r of one step backwards: from the gates' values zr, the cells before (prev) and
// after (cell) the step, the output's delta dhr and the cell delta carried from the step after,
// the gates' pre-activation deltas dr (4 o) and the cell's delta dc[r].
void lstm_unit_backward(int o, int r, global const REAL *zr, global const REAL *prev,
                        global const REAL *cell, REAL dhr, global const REAL *carried,
                        global REAL *dc, global REAL *dr) {
    const REAL f = zr[r], i = zr[o + r], og = zr[2 * o + r], g = zr[3 * o + r];
    const REAL dct = dhr * og + carried[r];
    dc[r] = dct;
    dr[r] = f * (1 - f) * (dct * prev[r]);
    dr[o + r] = i * (1 - i) * (dct * g);
    dr[2 * o + r] = og * (1 - og) * (dhr * cell[r]);
    dr[3 * o + r] = (1 - g * g) * (dct * i);
}

// The cell delta carried to the step before, for unit k: U^T (f_s', i_s', o_s') + dc * f, from
// `sum`, the dot product along row k of U^T (in vectors of VW lanes, kernels/gemm.cl) whose
// terms from `from` on are still to be added one by one.
REAL lstm_carry_at(int o, int k, realv sum, int from, global const REAL *ut,
                   global const REAL *zr, global const REAL *dr, global const REAL *dc) {
    global const REAL *a = ut + (size_t)k * 3 * o;
    REAL total = gemm_hsum(sum);
    for (int p = from; p < 3 * o; ++p) total += a[p] * dr[p];
    return total + dc[k] * zr[k];
}

// carried[k] for units k0 .. k0 + count - 1 (count at most LSTM_VECTORS, 4): the rows' dot
// products side by side when there are 4, each summed as one alone would be.
void lstm_carry_rows(int o, int k0, int count, global const REAL *ut, global const REAL *zr,
                     global const REAL *dr, global const REAL *dc, global REAL *carried) {
    const int n = 3 * o;
    int q = 0;
    if (count == 4) {
        global const REAL *u = ut + (size_t)k0 * n;
        realv s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (; q + VW <= n; q += VW) {
            const realv d = VLOAD(0, dr + q);
            s0 += VLOAD(0, u + q) * d;
            s1 += VLOAD(0, u + n + q) * d;
            s2 += VLOAD(0, u + 2 * n + q) * d;
            s3 += VLOAD(0, u + 3 * n + q) * d;
        }
        carried[k0] = lstm_carry_at(o, k0, s0, q, ut, zr, dr, dc);
        carried[k0 + 1] = lstm_carry_at(o, k0 + 1, s1, q, ut, zr, dr, dc);
        carried[k0 + 2] = lstm_carry_at(o, k0 + 2, s2, q, ut, zr, dr, dc);
        carried[k0 + 3] = lstm_carry_at(o, k0 + 3, s3, q, ut, zr, dr, dc);
        return;
    }
    for (int k = k0; k < k0 + count; ++k) {
        global const REAL *u = ut + (size_t)k * n;
        realv sum = 0;
        for (q = 0; q + VW <= n; q += VW) sum += VLOAD(0, u + q) * VLOAD(0, dr + q);
        carried[k] = lstm_carry_at(o, k, sum, q, ut, zr, dr, dc);
    }
}

// Backward through time (runRecurrentBackwards, last step first). dh (T * B, o): the delta at
// the outputs. d (T * B, 4 o) gets the gates' pre-activation deltas f_s', i_s', o_s', c_s'.
// carry (B, o): the cell delta passed back a step (zero at the last step; after the loop, the
// delta of the starting state); dcell (B, o): scratch.
kernel void lstm_backward_steps(int T, int B, int o, global const REAL *ut, global const REAL *z,
                                global const REAL *c, global const REAL *dh, global REAL *d,
                                global REAL *carry, global REAL *dcell) {
    const int s = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    global REAL *carried = carry + (size_t)s * o, *dc = dcell + (size_t)s * o;
    for (int r = lid; r < o; r += nl) carried[r] = 0;
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int t = T - 1; t >= 0; --t) {
        const size_t row = (size_t)t * B + s;
        global const REAL *zr = z + row * 4 * o, *prev = c + row * o, *cell = c + (row + B) * o;
        global REAL *dr = d + row * 4 * o;
        for (int r = lid; r < o; r += nl)
            lstm_unit_backward(o, r, zr, prev, cell, dh[row * o + r], carried, dc, dr);
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int k = lid * LSTM_VECTORS; k < o; k += nl * LSTM_VECTORS)
            lstm_carry_rows(o, k, min(LSTM_VECTORS, o - k), ut, zr, dr, dc, carried);
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

// -- BasicRecurrent (Grenade.Recurrent.Layers.BasicRecurrent): y = b + W [x; y_prev] --------

// Unit r's output b_r + W_r [x; prev] for one step (w (o, i + o)).
REAL basic_recurrent_unit_at(int i, int o, int r, global const REAL *w,
                             global const REAL *bias, global const REAL *xr,
                             global const REAL *prev) {
    global const REAL *wr = w + (size_t)r * (i + o);
    REAL sum = 0;
    for (int k = 0; k < i; ++k) sum += wr[k] * xr[k];
    for (int k = 0; k < o; ++k) sum += wr[i + k] * prev[k];
    return bias[r] + sum;
}

// Column k of W^T d for one step: the input's delta (k < i) or the previous output's.
REAL basic_recurrent_back_at(int i, int o, int k, global const REAL *w, global const REAL *dr) {
    REAL sum = 0;
    for (int r = 0; r < o; ++r) sum += w[(size_t)r * (i + o) + k] * dr[r];
    return sum;
}

// Forward. w (o, i + o); y (T * B, o); states ((T + 1) * B, o): the previous outputs.
kernel void basic_recurrent_forward_steps(int T, int B, int i, int o, global const REAL *w,
                                          global const REAL *bias, global const REAL *x,
                                          global REAL *states, global REAL *y) {
    const int s = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    for (int t = 0; t < T; ++t) {
        const size_t row = (size_t)t * B + s;
        global const REAL *xr = x + row * i, *prev = states + row * o;
        for (int r = lid; r < o; r += nl) {
            const REAL value = basic_recurrent_unit_at(i, o, r, w, bias, xr, prev);
            y[row * o + r] = value;
            states[(row + B) * o + r] = value;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

// Backward through time. d (T * B, o) gets dRec + dEdy, the step's bias gradient; dx (T * B, i)
// (unless `input_delta` is 0) and carry (B, o) the two parts of W^T d.
kernel void basic_recurrent_backward_steps(int T, int B, int i, int o, int input_delta,
                                           global const REAL *w, global const REAL *dy,
                                           global REAL *d, global REAL *dx, global REAL *carry) {
    const int s = get_group_id(0), lid = get_local_id(0), nl = get_local_size(0);
    global REAL *carried = carry + (size_t)s * o;
    for (int r = lid; r < o; r += nl) carried[r] = 0;
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int t = T - 1; t >= 0; --t) {
        const size_t row = (size_t)t * B + s;
        global REAL *dr = d + row * o;
        for (int r = lid; r < o; r += nl) dr[r] = carried[r] + dy[row * o + r];
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int k = lid; k < i + o; k += nl) {
            const REAL sum = basic_recurrent_back_at(i, o, k, w, dr);
            if (k >= i) carried[k - i] = sum;
            else if (input_delta) dx[row * i + k] = sum;
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
    }
}

// The concatenated inputs [x; y_prev] of every step (the factors of W's per-step gradients).
kernel void basic_recurrent_inputs(int rows, int i, int o, global const REAL *x,
                                   global const REAL *states, global REAL *xy) {
    const int k = get_global_id(0), row = get_global_id(1);
    if (k >= i + o || row >= rows) return;
    xy[(size_t)row * (i + o) + k] = k < i ? x[(size_t)row * i + k]
                                          : states[(size_t)row * o + k - i];
}

// -- training: updates, states ---------------------------------------------------------------

// Element `at` of w: the `steps` gradients d[k * ldd] x[k * ldx] applied one at a time, step k
// being `first` advanced k times (the scalar form of recurrent_update_at's ordered loop).
void recurrent_ordered_at(optimizer first, REAL decay, int steps, global const REAL *d,
                          int ldd, global const REAL *x, int ldx, global REAL *w,
                          global REAL *m, global REAL *v, size_t at) {
    REAL wi = w[at], mi = m[at], vi = first.kind == OPTIMIZER_SGD ? 0 : v[at];
    optimizer o = first;
    for (int k = 0; k < steps; ++k, o = optimizer_next(o))
        optimizer_step(o, decay, d[(size_t)k * ldd] * x[(size_t)k * ldx], &wi, &mi, &vi);
    w[at] = wi;
    m[at] = mi;
    if (first.kind != OPTIMIZER_SGD) v[at] = vi;
}

// Columns per work-item of recurrent_update (as Step._update_launches counts them in
// grenade_py/execution.py): UPDATE_VECTORS vectors of UPDATE_LANES. A step's optimiser updates
// form a chain of dependent operations, so each work-item carries several independent chains at
// once (4: ~1.8x the single chain's speed on PoCL's CPU device, in vectors of 8). Vectors of VW
// lanes where a register holds them (on an AVX-512 EPYC, float32: Grenade's ordered SGD steps of
// the Shakespeare network 1.22-1.43x as fast as in 8 lanes, Adam's 0.97-1.08x, summed steps
// 0.97-1.13x), else of 8 (on 256-bit vectors, PoCL's haswell build there, 4 lanes of doubles
// ran at 0.78-1.05x the speed of 8).
#define UPDATE_VECTORS 4
#if DOT_VW < VW
#define UPDATE_LANES 8
#define UPDATE_STEP optimizer_step8
#else
#define UPDATE_LANES VW
#define UPDATE_STEP optimizer_stepv
#endif
#define UPDATE_COLUMNS (UPDATE_VECTORS * UPDATE_LANES)
typedef DOT_TYPE(REAL, UPDATE_LANES) updatev;
#define UPDATE_VLOAD DOT_TYPE(vload, UPDATE_LANES)
#define UPDATE_VSTORE DOT_TYPE(vstore, UPDATE_LANES)

// Grenade's trainRecurrent update of a weight matrix w (rows, cols) whose gradient at step k is
// d[k * ldd + r] * x[k * ldx + c]: with `ordered`, the `steps` gradients applied one at a time in
// time order, step k being the optimiser's step t0 + k (applyRecurrentUpdate folded over the
// steps; p1, p2 are Adam's b1^t0, b2^t0); otherwise their sum as step t0. A vector is one row
// whose d is all ones. `decay` is 0 for parameters Grenade does not regularise. The work-item
// of row r and columns from c0: UPDATE_VECTORS vectors of UPDATE_LANES columns, then, past the
// last whole vector, single columns. The kind is a parameter here and a constant in each kernel
// below, so that each kernel holds one rule.
void recurrent_update_at(const int kind, int r, int c0, int steps, int rows, int cols,
                         global const REAL *d, int ldd, global const REAL *x, int ldx,
                         REAL rate, REAL beta1, REAL beta2, REAL eps, REAL decay, REAL p1,
                         REAL p2, int ordered, global REAL *w, global REAL *m, global REAL *v) {
    if (c0 >= cols || r >= rows) return;
    const optimizer first = optimizer_make(kind, rate, beta1, beta2, eps, p1, p2);
    const int adam = kind != OPTIMIZER_SGD;
    const int whole = min(UPDATE_VECTORS, (cols - c0) / UPDATE_LANES);
    const size_t at = (size_t)r * cols + c0;
    // The chains past `whole` run on zeros and are not stored: a fixed count of chains
    // stays in registers.
    updatev wv[UPDATE_VECTORS], mv[UPDATE_VECTORS], vv[UPDATE_VECTORS], g[UPDATE_VECTORS];
    #pragma unroll
    for (int j = 0; j < UPDATE_VECTORS; ++j) {
        wv[j] = j < whole ? UPDATE_VLOAD(j, w + at) : 0;
        mv[j] = j < whole ? UPDATE_VLOAD(j, m + at) : 0;
        vv[j] = adam && j < whole ? UPDATE_VLOAD(j, v + at) : 0;
        g[j] = 0;
    }
    optimizer o = first;
    // The steps in time order, on the chains below `chains`: with every chain real (a
    // constant), the choice per load folds away.
#define ORDERED_STEPS(chains)                                                                 \
    for (int k = 0; k < steps; ++k, o = optimizer_next(o)) {                                  \
        const REAL dk = d[(size_t)k * ldd + r];                                               \
        global const REAL *xk = x + (size_t)k * ldx + c0;                                     \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < UPDATE_VECTORS; ++j)                                              \
            UPDATE_STEP(o, decay, dk * (j < (chains) ? UPDATE_VLOAD(j, xk) : 0), &wv[j],      \
                        &mv[j], &vv[j]);                                                      \
    }
    if (ordered && whole == UPDATE_VECTORS) {
        ORDERED_STEPS(UPDATE_VECTORS)
    } else if (ordered) {
        ORDERED_STEPS(whole)
    } else {
        for (int k = 0; k < steps; ++k) {
            const REAL dk = d[(size_t)k * ldd + r];
            global const REAL *xk = x + (size_t)k * ldx + c0;
            #pragma unroll
            for (int j = 0; j < UPDATE_VECTORS; ++j)
                g[j] += dk * (j < whole ? UPDATE_VLOAD(j, xk) : 0);
        }
    }
#undef ORDERED_STEPS
    for (int j = 0; j < whole; ++j) {
        if (!ordered) UPDATE_STEP(first, decay, g[j], &wv[j], &mv[j], &vv[j]);
        UPDATE_VSTORE(wv[j], j, w + at);
        UPDATE_VSTORE(mv[j], j, m + at);
        if (adam) UPDATE_VSTORE(vv[j], j, v + at);
    }
    if (whole == UPDATE_VECTORS) return;
    for (int c = c0 + UPDATE_LANES * whole; c < cols; ++c) {
        if (ordered) {
            recurrent_ordered_at(first, decay, steps, d + r, ldd, x + c, ldx, w, m, v,
                                 (size_t)r * cols + c);
        } else {
            REAL sum = 0;
            for (int k = 0; k < steps; ++k) sum += d[(size_t)k * ldd + r] * x[(size_t)k * ldx + c];
            optimizer_at(first, decay, sum, w, m, v, (size_t)r * cols + c);
        }
    }
}

// Every parameter array of a network in one launch (recurrent_update_at for each): `table`
// holds UPDATE_ENTRY ints per array, in order: its first work-item, rows, cols, where its d
// and x lie in `steps_buffer` (a Step's buffers, one allocation) and their row strides, whether
// it decays (0 or 1: `decay` times it), and its offset in the flat buffers w, m, v. Array a's
// work-items are rows x ceil(cols / UPDATE_COLUMNS), row by row. global size: the table's
// work-items (or more: those past the last array's do nothing).
#define UPDATE_ENTRY 9
#define RECURRENT_UPDATE(NAME, KIND)                                                          \
    kernel void NAME(int steps, int arrays, global const int *table,                          \
                     global const REAL *steps_buffer, REAL rate, REAL beta1, REAL beta2,      \
                     REAL eps, REAL decay, REAL p1, REAL p2, int ordered, global REAL *w,     \
                     global REAL *m, global REAL *v) {                                        \
        const int q = get_global_id(0);                                                       \
        int a = 0;                                                                            \
        while (a + 1 < arrays && q >= table[(a + 1) * UPDATE_ENTRY]) ++a;                     \
        global const int *e = table + a * UPDATE_ENTRY;                                       \
        const int item = q - e[0], across = (e[2] + UPDATE_COLUMNS - 1) / UPDATE_COLUMNS;     \
        if (item >= e[1] * across) return;                                                    \
        recurrent_update_at(KIND, item / across, item % across * UPDATE_COLUMNS, steps,       \
                            e[1], e[2], steps_buffer + e[3], e[4], steps_buffer + e[5], e[6], \
                            rate, beta1, beta2, eps, decay * e[7], p1, p2, ordered,           \
                            w + e[8], m + e[8], v + e[8]);                                    \
    }
RECURRENT_UPDATE(recurrent_update_sgd, OPTIMIZER_SGD)
RECURRENT_UPDATE(recurrent_update_adam, OPTIMIZER_ADAM)
RECURRENT_UPDATE(recurrent_update_adamw, OPTIMIZER_ADAMW)

// -- clipping (clip_grad_norm_ for recurrent updates) ---------------------------------------
// A factor's rows are (d, ldd, rows) and (x, ldx, cols) as recurrent_update takes them. The
// deltas (each factor's d, or a vector's x) are scaled in place before the update, so that the
// update kernels stay as they are; the starting states are not clipped.

// Ordered: the squared global norm of each step's gradient, sums[k] (+)= |d_k|^2 |x_k|^2 over
// the factors (an outer product's norm is the product of its factors'); `add` 0 for the first.
kernel void recurrent_row_norms(int steps, int rows, int cols, global const REAL *d, int ldd,
                                global const REAL *x, int ldx, int add, global REAL *sums) {
    const int k = get_global_id(0);
    if (k >= steps) return;
    REAL dd = 0, xx = 0;
    for (int r = 0; r < rows; ++r) dd += d[(size_t)k * ldd + r] * d[(size_t)k * ldd + r];
    for (int c = 0; c < cols; ++c) xx += x[(size_t)k * ldx + c] * x[(size_t)k * ldx + c];
    sums[k] = (add ? sums[k] : 0) + dd * xx;
}

// Ordered: each step's clipping factor, in place: min(1, max_norm / (sqrt(sums[k]) + 1e-6)).
kernel void recurrent_row_scales(int steps, REAL max_norm, global REAL *sums) {
    const int k = get_global_id(0);
    if (k < steps) sums[k] = fmin((REAL)1, max_norm / (sqrt(sums[k]) + (REAL)1e-6));
}

// Summed: out[at + r] = the L2 norm of row r of the summed gradient sum_k d_k x_k^T, so that
// optimizer_clip_scale over `out` gives the global factor.
kernel void recurrent_sum_norms(int steps, int rows, int cols, global const REAL *d, int ldd,
                                global const REAL *x, int ldx, int at, global REAL *out) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    REAL total = 0;
    for (int c = 0; c < cols; ++c) {
        REAL g = 0;
        for (int k = 0; k < steps; ++k) g += d[(size_t)k * ldd + r] * x[(size_t)k * ldx + c];
        total += g * g;
    }
    out[at + r] = sqrt(total);
}

// buf[k * ld + j] *= scale[k * stride] for j < width: a step's deltas by its factor (stride 1)
// or every step's by one factor (stride 0). global size (width, steps)
kernel void recurrent_scale_rows(int steps, int width, int ld, global const REAL *scale,
                                 int stride, global REAL *buf) {
    const int j = get_global_id(0), k = get_global_id(1);
    if (j < width && k < steps) buf[(size_t)k * ld + j] *= scale[(size_t)k * stride];
}

// Starting state j's step from its delta g: under SGD, Grenade's updateRecInputs,
// state' = (1 - rate l2) state - rate g, without momentum; under Adam and AdamW, the optimiser's
// step with the state's own moments.
#pragma OPENCL FP_CONTRACT OFF
void recurrent_state_at(optimizer o, REAL decay, REAL g, global REAL *state, global REAL *m,
                        global REAL *v, int j) {
    if (o.kind == OPTIMIZER_SGD)
        state[j] = (1 - o.rate * decay) * state[j] - o.rate * g;
    else
        optimizer_at(o, decay, g, state, m, v, j);
}
#pragma OPENCL FP_CONTRACT ON

// The starting states' update from g, their deltas summed over the B sequences (B, n). Under
// SGD, Grenade's updateRecInputs: state' = (1 - rate l2) state - rate g, no momentum. Under
// Adam and AdamW: step t of the optimiser, with the state's own moments.
kernel void recurrent_state_update(int n, int B, int kind, REAL rate, REAL beta1, REAL beta2,
                                   REAL eps, REAL decay, REAL p1, REAL p2,
                                   global const REAL *grad, global REAL *state, global REAL *m,
                                   global REAL *v) {
    const int j = get_global_id(0);
    if (j >= n) return;
    REAL g = 0;
    for (int b = 0; b < B; ++b) g += grad[(size_t)b * n + j];
    recurrent_state_at(optimizer_make(kind, rate, beta1, beta2, eps, p1, p2), decay, g, state, m,
                       v, j);
}

// Every sequence starts from the learned state: rows 0 .. B - 1 of `states` (n values each).
kernel void recurrent_start_states(int n, int B, global const REAL *state,
                                   global REAL *states) {
    const int j = get_global_id(0), b = get_global_id(1);
    if (j < n && b < B) states[(size_t)b * n + j] = state[j];
}

// Character sequences from a corpus of symbol indices, one-hot: x[t] = corpus[offset + t],
// target[t] = corpus[offset + t + 1] for T steps of B sequences starting at offsets[first + s];
// targets on every step (`every`) or on the last only (Grenade's shakespeare.hs).
// A work-item per row: global size (T B).
kernel void one_hot_sequences(int T, int B, int n, int first, int every,
                              global const int *corpus, global const int *offsets,
                              global REAL *x, global REAL *target, global REAL *mask) {
    const int row = get_global_id(0);
    if (row >= T * B) return;
    const int t = row / B, s = row % B;
    const int at = offsets[first + s] + t, in = corpus[at], out = corpus[at + 1];
    global REAL *xr = x + (size_t)row * n, *tr = target + (size_t)row * n;
    for (int j = 0; j < n; ++j) {
        xr[j] = in == j;
        tr[j] = out == j;
    }
    mask[row] = every || t == T - 1;
}
