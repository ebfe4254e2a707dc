// BatchNorm over a batch laid out (N, C, P): channel c's values are x[(n * C + c) * P + p]
// (D1: P = 1, a channel per feature; D3: P = rows x cols, channel-major). Training normalises
// by the batch's statistics, x^ = (x - mean) / sqrt(var + eps) with the biased variance, and
// moves the running statistics by `momentum` (the variance's unbiased, as PyTorch does);
// inference normalises by the running ones. y = gamma x^ + beta.

// The channel reductions run as one work-group of BATCHNORM_LANES work-items per channel.
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

// The index of channel c's k-th value of the batch.
size_t batchnorm_at(int C, int P, int c, int k) {
    return ((size_t)(k / P) * C + c) * P + k % P;
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
    const int c = get_group_id(0), lid = get_local_id(0), count = N * P;
    REAL sum = 0;
    for (int k = lid; k < count; k += BATCHNORM_LANES) sum += x[batchnorm_at(C, P, c, k)];
    const REAL m = batchnorm_group_sum(part, sum) / count;
    REAL squares = 0;
    for (int k = lid; k < count; k += BATCHNORM_LANES) {
        const REAL e = x[batchnorm_at(C, P, c, k)] - m;
        squares += e * e;
    }
    squares = batchnorm_group_sum(part, squares);
    if (lid != 0) return;
    const REAL var = squares / count;
    mean[c] = m;
    inv_std[c] = 1 / sqrt(var + eps);
    affine[c] = gamma[c] * inv_std[c];
    affine[C + c] = beta[c] - m * affine[c];
    running[c] = (1 - momentum) * running[c] + momentum * m;
    running[C + c] = (1 - momentum) * running[C + c]
                     + momentum * (count > 1 ? squares / (count - 1) : var);
}

// The element-wise kernels run over global size (P, N C) (D3: positions along dimension 0,
// so a work-group shares a channel) or, where P is 1, (C, N) (D1: features along dimension 0).
// This work-item's channel in *c and its value's index, or -1 past the batch.
long batchnorm_element(int N, int C, int P, int *c) {
    const int i = get_global_id(0), row = get_global_id(1);
    if (P == 1) {
        *c = i;
        return i < C && row < N ? (long)row * C + i : -1;
    }
    *c = row % C;
    return i < P && row < N * C ? (long)row * P + i : -1;
}

// y = a x + b, with a = affine[c] and b = affine[C + c] per channel: the training forward pass
// (batchnorm_statistics' scale and shift) and the backward pass's input delta
// (batchnorm_backward_statistics': dx = a dy + b x + d, see batchnorm_backward_input).
kernel void batchnorm_normalise(int N, int C, int P, global const REAL *x,
                                global const REAL *affine, global REAL *y) {
    int c;
    const long at = batchnorm_element(N, C, P, &c);
    if (at < 0) return;
    y[at] = affine[c] * x[at] + affine[C + c];
}

// Inference: y = gamma (x - running mean) / sqrt(running var + eps) + beta.
kernel void batchnorm_inference(int N, int C, int P, REAL eps, global const REAL *x,
                                global const REAL *running, global const REAL *gamma,
                                global const REAL *beta, global REAL *y) {
    int c;
    const long at = batchnorm_element(N, C, P, &c);
    if (at < 0) return;
    y[at] = gamma[c] * ((x[at] - running[c]) / sqrt(running[C + c] + eps)) + beta[c];
}

// Backward, per channel (work-group): dbeta = sum dy, dgamma = sum dy x^ (over the batch),
// and the input delta dx = gamma inv_std (dy - mean(dy) - x^ mean(dy x^)) as
// dx = a dy + b x + d: coefficients[c], [C + c], [2 C + c] = a, b, d.
kernel void batchnorm_backward_statistics(int N, int C, int P, global const REAL *x,
                                          global const REAL *mean, global const REAL *inv_std,
                                          global const REAL *gamma, global const REAL *dy,
                                          global REAL *dgamma, global REAL *dbeta,
                                          global REAL *coefficients) {
    local REAL part[BATCHNORM_LANES];
    const int c = get_group_id(0), lid = get_local_id(0), count = N * P;
    REAL sum_dy = 0, sum_dy_xhat = 0;
    for (int k = lid; k < count; k += BATCHNORM_LANES) {
        const size_t at = batchnorm_at(C, P, c, k);
        sum_dy += dy[at];
        sum_dy_xhat += dy[at] * ((x[at] - mean[c]) * inv_std[c]);
    }
    sum_dy = batchnorm_group_sum(part, sum_dy);
    sum_dy_xhat = batchnorm_group_sum(part, sum_dy_xhat);
    if (lid != 0) return;
    dbeta[c] = sum_dy;
    dgamma[c] = sum_dy_xhat;
    const REAL a = gamma[c] * inv_std[c], m_dy = sum_dy / count, m_dy_xhat = sum_dy_xhat / count;
    coefficients[c] = a;
    coefficients[C + c] = -a * inv_std[c] * m_dy_xhat;
    coefficients[2 * C + c] = a * (mean[c] * inv_std[c] * m_dy_xhat - m_dy);
}

// dx = a dy + b x + d with batchnorm_backward_statistics' coefficients.
kernel void batchnorm_backward_input(int N, int C, int P, global const REAL *x,
                                     global const REAL *dy, global const REAL *coefficients,
                                     global REAL *dx) {
    int c;
    const long at = batchnorm_element(N, C, P, &c);
    if (at < 0) return;
    dx[at] = coefficients[c] * dy[at] + coefficients[C + c] * x[at] + coefficients[2 * C + c];
}
