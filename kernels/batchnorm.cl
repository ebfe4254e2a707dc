// BatchNorm over a batch laid out (N, C, P): channel c's values are x[(n * C + c) * P + p]
// (D1: P = 1, a channel per feature; D3: P = rows x cols, channel-major). Training normalises
// by the batch's statistics, x^ = (x - mean) / sqrt(var + eps) with the biased variance, and
// moves the running statistics by `momentum` (the variance's unbiased, as PyTorch does);
// inference normalises by the running ones. y = gamma x^ + beta.

// One work-item per channel: its batch mean and 1 / sqrt(var + eps) (two passes), and the
// running statistics' update. running: (2, C), the means then the variances.
kernel void batchnorm_statistics(int N, int C, int P, REAL eps, REAL momentum,
                                 global const REAL *x, global REAL *mean, global REAL *inv_std,
                                 global REAL *running) {
    const int c = get_global_id(0);
    if (c >= C) return;
    const int count = N * P;
    REAL sum = 0;
    for (int n = 0; n < N; ++n)
        for (int p = 0; p < P; ++p) sum += x[((size_t)n * C + c) * P + p];
    const REAL m = sum / count;
    REAL squares = 0;
    for (int n = 0; n < N; ++n)
        for (int p = 0; p < P; ++p) {
            const REAL e = x[((size_t)n * C + c) * P + p] - m;
            squares += e * e;
        }
    const REAL var = squares / count;
    mean[c] = m;
    inv_std[c] = 1 / sqrt(var + eps);
    running[c] = (1 - momentum) * running[c] + momentum * m;
    running[C + c] = (1 - momentum) * running[C + c]
                     + momentum * (count > 1 ? squares / (count - 1) : var);
}

// y = gamma (x - mean) inv_std + beta; global size (P, C, N).
kernel void batchnorm_normalise(int N, int C, int P, global const REAL *x,
                                global const REAL *mean, global const REAL *inv_std,
                                global const REAL *gamma, global const REAL *beta,
                                global REAL *y) {
    const int p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= P || c >= C || n >= N) return;
    const size_t at = ((size_t)n * C + c) * P + p;
    y[at] = gamma[c] * ((x[at] - mean[c]) * inv_std[c]) + beta[c];
}

// Inference: y = gamma (x - running mean) / sqrt(running var + eps) + beta; global (P, C, N).
kernel void batchnorm_inference(int N, int C, int P, REAL eps, global const REAL *x,
                                global const REAL *running, global const REAL *gamma,
                                global const REAL *beta, global REAL *y) {
    const int p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= P || c >= C || n >= N) return;
    const size_t at = ((size_t)n * C + c) * P + p;
    y[at] = gamma[c] * ((x[at] - running[c]) / sqrt(running[C + c] + eps)) + beta[c];
}

// Backward, one work-item per channel: dbeta = sum dy, dgamma = sum dy x^ (over the batch),
// and, for the input delta, sums[c] = the two means dy and dy x^.
kernel void batchnorm_backward_statistics(int N, int C, int P, global const REAL *x,
                                          global const REAL *mean, global const REAL *inv_std,
                                          global const REAL *dy, global REAL *dgamma,
                                          global REAL *dbeta, global REAL *sums) {
    const int c = get_global_id(0);
    if (c >= C) return;
    REAL sum_dy = 0, sum_dy_xhat = 0;
    for (int n = 0; n < N; ++n)
        for (int p = 0; p < P; ++p) {
            const size_t at = ((size_t)n * C + c) * P + p;
            sum_dy += dy[at];
            sum_dy_xhat += dy[at] * ((x[at] - mean[c]) * inv_std[c]);
        }
    dbeta[c] = sum_dy;
    dgamma[c] = sum_dy_xhat;
    sums[c] = sum_dy / (N * P);
    sums[C + c] = sum_dy_xhat / (N * P);
}

// dx = gamma inv_std (dy - mean dy - x^ mean(dy x^)); global size (P, C, N).
kernel void batchnorm_backward_input(int N, int C, int P, global const REAL *x,
                                     global const REAL *mean, global const REAL *inv_std,
                                     global const REAL *gamma, global const REAL *dy,
                                     global const REAL *sums, global REAL *dx) {
    const int p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= P || c >= C || n >= N) return;
    const size_t at = ((size_t)n * C + c) * P + p;
    const REAL xhat = (x[at] - mean[c]) * inv_std[c];
    dx[at] = gamma[c] * inv_std[c] * (dy[at] - sums[c] - xhat * sums[C + c]);
}
