// BatchNorm over a batch laid out (N, C, P): channel c's values are x[(n * C + c) * P + p]
// (D1: P = 1, a channel per feature; D3: P = rows x cols, channel-major). Training normalises
// by the batch's statistics, x^ = (x - mean) / sqrt(var + eps) with the biased variance, and
// moves the running statistics by `momentum` (the variance's unbiased, as PyTorch does);
// inference normalises by the running ones. y = gamma x^ + beta.

// The kernels take the batch in runs: each (sample n, channel c) row's P values in runs of 8
// (a shorter last one where P % 8 != 0), run j of channel c being sample j / R's run j % R
// (R = ceil(P / 8) runs a row): one division per 8 values, whole runs as vectors. The
// channel reductions run as one work-group of BATCHNORM_LANES work-items per channel, work-item
// lid summing runs lid, lid + LANES, ... in REAL8 lanes, then across them; the element-wise
// kernels as a work-item per run (global size N C R), or where P is 1 (D1: a channel per
// feature) per run of 8 features of a sample (global size N ceil(C / 8)).
#define BATCHNORM_LANES 64

// The sum over the work-group of each lane's `value` (every lane gets it).
REAL batchnorm_group_sum(local REAL *part, REAL value) {
    const int lid = get_local_id(0);
    part[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = BATCHNORM_LANES / 2; h > 0; h /= 2) {
        if (lid < h) part[lid] += part[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const REAL sum = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return sum;
}

REAL batchnorm_hsum(REAL8 v) {
    const REAL4 h = v.lo + v.hi;
    return (h.x + h.y) + (h.z + h.w);
}

// Where row `row` (n C + c)'s run r starts, and in *count its values (8, or fewer at the end).
size_t batchnorm_run(int P, size_t row, int r, int *count) {
    *count = min(8, P - 8 * r);
    return row * P + 8 * r;
}

// Channel c's run j of the batch (j < N R): its start, and its values in *count.
size_t batchnorm_channel_run(int C, int P, int c, int j, int *count) {
    const int runs = (P + 7) / 8;
    return batchnorm_run(P, (size_t)(j / runs) * C + c, j % runs, count);
}

// The element-wise kernels' run: the work-item's start, its (first) channel in *c and its
// values in *count; -1 past the batch.
long batchnorm_element_run(int N, int C, int P, int *c, int *count) {
    const int q = get_global_id(0);
    if (P == 1) {  // runs of features
        const int runs = (C + 7) / 8;
        if (q >= N * runs) return -1;
        *c = q % runs * 8;
        return batchnorm_run(C, q / runs, q % runs, count);
    }
    const int runs = (P + 7) / 8;
    if (q >= N * C * runs) return -1;
    *c = q / runs % C;
    return batchnorm_run(P, q / runs, q % runs, count);
}

// A per-channel value (v[c], a channel from *c on) for a whole run, and for value q of a run.
REAL8 batchnorm_run_of(global const REAL *v, int c, int P) {
    return P == 1 ? vload8(0, v + c) : (REAL8)v[c];
}
REAL batchnorm_value_of(global const REAL *v, int c, int P, int q) {
    return v[P == 1 ? c + q : c];
}

// Channel c's statistics from its `count` values' mean m and summed squared deviations: mean,
// 1 / sqrt(var + eps), the forward pass's scale and shift, the running statistics' update.
void batchnorm_keep_statistics(int C, int c, int count, REAL m, REAL squares, REAL eps,
                               REAL momentum, global const REAL *gamma, global const REAL *beta,
                               global REAL *mean, global REAL *inv_std, global REAL *affine,
                               global REAL *running) {
    const REAL var = squares / count;
    mean[c] = m;
    inv_std[c] = 1 / sqrt(var + eps);
    affine[c] = gamma[c] * inv_std[c];
    affine[C + c] = beta[c] - m * affine[c];
    running[c] = (1 - momentum) * running[c] + momentum * m;
    running[C + c] = (1 - momentum) * running[C + c]
                     + momentum * (count > 1 ? squares / (count - 1) : var);
}

// Per channel (work-group): its batch mean and 1 / sqrt(var + eps) (two passes), the
// running statistics' update, and the forward pass as y = x scale + shift: affine[c] = scale
// = gamma inv_std, affine[C + c] = shift = beta - mean scale. running: (2, C), the means then
// the variances.
kernel void batchnorm_statistics(int N, int C, int P, REAL eps, REAL momentum,
                                 global const REAL *x, global const REAL *gamma,
                                 global const REAL *beta, global REAL *mean,
                                 global REAL *inv_std, global REAL *affine,
                                 global REAL *running) {
    local REAL part[BATCHNORM_LANES];
    const int c = get_group_id(0), lid = get_local_id(0), runs = N * ((P + 7) / 8);
    const int count = N * P;
    REAL8 sum8 = 0;
    REAL sum = 0;
    for (int j = lid; j < runs; j += BATCHNORM_LANES) {
        int n;
        const size_t at = batchnorm_channel_run(C, P, c, j, &n);
        if (n == 8) sum8 += vload8(0, x + at);
        else for (int q = 0; q < n; ++q) sum += x[at + q];
    }
    const REAL m = batchnorm_group_sum(part, batchnorm_hsum(sum8) + sum) / count;
    REAL8 squares8 = 0;
    REAL squares = 0;
    for (int j = lid; j < runs; j += BATCHNORM_LANES) {
        int n;
        const size_t at = batchnorm_channel_run(C, P, c, j, &n);
        if (n == 8) {
            const REAL8 e = vload8(0, x + at) - m;
            squares8 += e * e;
        } else {
            for (int q = 0; q < n; ++q) squares += (x[at + q] - m) * (x[at + q] - m);
        }
    }
    squares = batchnorm_group_sum(part, batchnorm_hsum(squares8) + squares);
    if (lid == 0)
        batchnorm_keep_statistics(C, c, count, m, squares, eps, momentum, gamma, beta, mean,
                                  inv_std, affine, running);
}

// batchnorm_statistics where P is 1 (D1: a channel per feature): a work-item per feature,
// its N values C apart summed one by one. global size (C)
kernel void batchnorm_feature_statistics(int N, int C, REAL eps, REAL momentum,
                                         global const REAL *x, global const REAL *gamma,
                                         global const REAL *beta, global REAL *mean,
                                         global REAL *inv_std, global REAL *affine,
                                         global REAL *running) {
    const int c = get_global_id(0);
    if (c >= C) return;
    REAL sum = 0, squares = 0;
    for (int n = 0; n < N; ++n) sum += x[(size_t)n * C + c];
    const REAL m = sum / N;
    for (int n = 0; n < N; ++n) squares += (x[(size_t)n * C + c] - m) * (x[(size_t)n * C + c] - m);
    batchnorm_keep_statistics(C, c, N, m, squares, eps, momentum, gamma, beta, mean, inv_std,
                              affine, running);
}

// y = a x + b, with a = affine[c] and b = affine[C + c] per channel: the training forward pass
// (batchnorm_statistics' scale and shift); with `relu` (not NULL), a Relu's output after it
// instead (y NULL).
STREAMING kernel void batchnorm_normalise(int N, int C, int P, global const REAL *x,
                                          global const REAL *affine, global REAL *y,
                                          global REAL *relu) {
    int c, n;
    const long at = batchnorm_element_run(N, C, P, &c, &n);
    if (at < 0) return;
    if (n == 8) {
        const REAL8 v = batchnorm_run_of(affine, c, P) * vload8(0, x + at) +
                        batchnorm_run_of(affine + C, c, P);
        if (relu) vstore8(relu_forward8(v), 0, relu + at);
        else vstore8(v, 0, y + at);
        return;
    }
    for (int q = 0; q < n; ++q) {
        const REAL v = batchnorm_value_of(affine, c, P, q) * x[at + q] +
                       batchnorm_value_of(affine + C, c, P, q);
        if (relu) relu[at + q] = relu_forward_at(v);
        else y[at + q] = v;
    }
}

// Inference: y = gamma (x - running mean) / sqrt(running var + eps) + beta.
STREAMING kernel void batchnorm_inference(int N, int C, int P, REAL eps, global const REAL *x,
                                          global const REAL *running, global const REAL *gamma,
                                          global const REAL *beta, global REAL *y) {
    int c, n;
    const long at = batchnorm_element_run(N, C, P, &c, &n);
    if (at < 0) return;
    if (n == 8) {
        const REAL8 s = sqrt(batchnorm_run_of(running + C, c, P) + eps);
        vstore8(batchnorm_run_of(gamma, c, P) * ((vload8(0, x + at) -
                                                  batchnorm_run_of(running, c, P)) / s) +
                batchnorm_run_of(beta, c, P), 0, y + at);
        return;
    }
    for (int q = 0; q < n; ++q)
        y[at + q] = batchnorm_value_of(gamma, c, P, q) *
                    ((x[at + q] - batchnorm_value_of(running, c, P, q)) /
                     sqrt(batchnorm_value_of(running + C, c, P, q) + eps)) +
                    batchnorm_value_of(beta, c, P, q);
}

// The delta at the layer's output: dy, or with `relu` (not NULL: the output of a Relu after the
// layer, which runs in the backward kernels' launches) the Relu's input delta from dy (the
// Relu's output has its input's sign).
REAL batchnorm_delta(global const REAL *dy, global const REAL *relu, size_t at) {
    return relu ? relu_backward_at(relu[at], dy[at]) : dy[at];
}

REAL8 batchnorm_delta8(global const REAL *dy, global const REAL *relu, size_t at) {
    return relu ? relu_backward8(vload8(0, relu + at), vload8(0, dy + at)) : vload8(0, dy + at);
}

// Channel c's gradients from its sums over `count` values of dy and dy x^ (mean m, inv_std s):
// dbeta, dgamma, and the input delta's coefficients (see batchnorm_backward_statistics).
void batchnorm_keep_gradients(int C, int c, int count, REAL sum_dy, REAL sum_dy_xhat, REAL m,
                              REAL s, global const REAL *gamma, global REAL *dgamma,
                              global REAL *dbeta, global REAL *coefficients) {
    dbeta[c] = sum_dy;
    dgamma[c] = sum_dy_xhat;
    const REAL a = gamma[c] * s, m_dy = sum_dy / count, m_dy_xhat = sum_dy_xhat / count;
    coefficients[c] = a;
    coefficients[C + c] = -a * s * m_dy_xhat;
    coefficients[2 * C + c] = a * (m * s * m_dy_xhat - m_dy);
}

// Backward, per channel (work-group): dbeta = sum dy, dgamma = sum dy x^ (over the batch),
// and the input delta dx = gamma inv_std (dy - mean(dy) - x^ mean(dy x^)) as
// dx = a dy + b x + d: coefficients[c], [C + c], [2 C + c] = a, b, d.
kernel void batchnorm_backward_statistics(int N, int C, int P, global const REAL *x,
                                          global const REAL *mean, global const REAL *inv_std,
                                          global const REAL *gamma, global const REAL *dy,
                                          global const REAL *relu, global REAL *dgamma,
                                          global REAL *dbeta, global REAL *coefficients) {
    local REAL part[BATCHNORM_LANES];
    const int c = get_group_id(0), lid = get_local_id(0), runs = N * ((P + 7) / 8);
    const int count = N * P;
    const REAL m = mean[c], s = inv_std[c];
    REAL8 dy8 = 0, dy_xhat8 = 0;
    REAL sum_dy = 0, sum_dy_xhat = 0;
    for (int j = lid; j < runs; j += BATCHNORM_LANES) {
        int n;
        const size_t at = batchnorm_channel_run(C, P, c, j, &n);
        if (n == 8) {
            const REAL8 d = batchnorm_delta8(dy, relu, at);
            dy8 += d;
            dy_xhat8 += d * ((vload8(0, x + at) - m) * s);
        } else {
            for (int q = 0; q < n; ++q) {
                const REAL d = batchnorm_delta(dy, relu, at + q);
                sum_dy += d;
                sum_dy_xhat += d * ((x[at + q] - m) * s);
            }
        }
    }
    sum_dy = batchnorm_group_sum(part, batchnorm_hsum(dy8) + sum_dy);
    sum_dy_xhat = batchnorm_group_sum(part, batchnorm_hsum(dy_xhat8) + sum_dy_xhat);
    if (lid == 0)
        batchnorm_keep_gradients(C, c, count, sum_dy, sum_dy_xhat, m, s, gamma, dgamma, dbeta,
                                 coefficients);
}

// batchnorm_backward_statistics where P is 1 (D1): a work-item per feature. global size (C)
kernel void batchnorm_feature_backward_statistics(int N, int C, global const REAL *x,
                                                  global const REAL *mean,
                                                  global const REAL *inv_std,
                                                  global const REAL *gamma,
                                                  global const REAL *dy,
                                                  global const REAL *relu, global REAL *dgamma,
                                                  global REAL *dbeta,
                                                  global REAL *coefficients) {
    const int c = get_global_id(0);
    if (c >= C) return;
    const REAL m = mean[c], s = inv_std[c];
    REAL sum_dy = 0, sum_dy_xhat = 0;
    for (int n = 0; n < N; ++n) {
        const size_t at = (size_t)n * C + c;
        const REAL d = batchnorm_delta(dy, relu, at);
        sum_dy += d;
        sum_dy_xhat += d * ((x[at] - m) * s);
    }
    batchnorm_keep_gradients(C, c, N, sum_dy, sum_dy_xhat, m, s, gamma, dgamma, dbeta,
                             coefficients);
}

// dx = a dy + b x + d with batchnorm_backward_statistics' coefficients.
STREAMING kernel void batchnorm_backward_input(int N, int C, int P, global const REAL *x,
                                               global const REAL *dy, global const REAL *relu,
                                               global const REAL *coefficients,
                                               global REAL *dx) {
    int c, n;
    global const REAL *a = coefficients, *b = coefficients + C, *d = coefficients + 2 * C;
    const long at = batchnorm_element_run(N, C, P, &c, &n);
    if (at < 0) return;
    if (n == 8) {
        vstore8(batchnorm_run_of(a, c, P) * batchnorm_delta8(dy, relu, at) +
                batchnorm_run_of(b, c, P) * vload8(0, x + at) + batchnorm_run_of(d, c, P), 0,
                dx + at);
        return;
    }
    for (int q = 0; q < n; ++q)
        dx[at + q] = batchnorm_value_of(a, c, P, q) * batchnorm_delta(dy, relu, at + q) +
                     batchnorm_value_of(b, c, P, q) * x[at + q] + batchnorm_value_of(d, c, P, q);
}
