// FullyConnected: W is (out, in) row-major, b is (out); a batch is rows x (n, in) -> y (n, out).
// y = W x + b;  dx = W^T dy;  dW = sum over the batch of dy x^T;  db = sum over the batch of dy.
// The *_at functions are the maths of one element, shared by these kernels (one example at a
// time) and the fused per-example loop; batches go through the GEMMs of gemm.cl.

// sum over k < n of a[k * stride] * b[k], in four interleaved partial sums: independent chains
// keep a CPU's FMA units busy where one chain would wait on each add's latency.
REAL fc_dot(global const REAL *a, size_t stride, global const REAL *b, int n) {
    REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        s0 += a[k * stride] * b[k];
        s1 += a[(k + 1) * stride] * b[k + 1];
        s2 += a[(k + 2) * stride] * b[k + 2];
        s3 += a[(k + 3) * stride] * b[k + 3];
    }
    for (; k < n; ++k) s0 += a[k * stride] * b[k];
    return (s0 + s1) + (s2 + s3);
}

REAL fc_forward_at(global const REAL *w, global const REAL *b, global const REAL *x,
                   int in, int o) {
    return fc_dot(w + (size_t)o * in, 1, x, in) + b[o];
}

// dx[j] = sum over o < out of w[o, j] dy[o], added in order of o: one chain per input, which
// neighbouring inputs run side by side (work-items of fc_backward_input; the fused loop's
// gemm_row_product over the rows of W, whose sums are the same to the bit).
REAL fc_backward_input_at(global const REAL *w, global const REAL *dy, int in, int out, int j) {
    REAL s = 0;
    for (int o = 0; o < out; ++o) s += w[(size_t)o * in + j] * dy[o];
    return s;
}

// dW[o, j] and db[o], summed over n batch rows.
REAL fc_weight_grad_at(global const REAL *x, global const REAL *dy, int n, int in, int out,
                       int o, int j) {
    REAL acc = 0;
    for (int r = 0; r < n; ++r) acc += dy[(size_t)r * out + o] * x[(size_t)r * in + j];
    return acc;
}

REAL fc_bias_grad_at(global const REAL *dy, int n, int out, int o) {
    REAL acc = 0;
    for (int r = 0; r < n; ++r) acc += dy[(size_t)r * out + o];
    return acc;
}

// global size (out, n)
kernel void fc_forward(int n, int in, int out, global const REAL *w, global const REAL *b,
                       global const REAL *x, global REAL *y) {
    int o = get_global_id(0), r = get_global_id(1);
    if (o >= out || r >= n) return;
    y[(size_t)r * out + o] = fc_forward_at(w, b, x + (size_t)r * in, in, o);
}

// global size (in, n)
kernel void fc_backward_input(int n, int in, int out, global const REAL *w,
                              global const REAL *dy, global REAL *dx) {
    int j = get_global_id(0), r = get_global_id(1);
    if (j >= in || r >= n) return;
    dx[(size_t)r * in + j] = fc_backward_input_at(w, dy + (size_t)r * out, in, out, j);
}

// global size (in + 1, out)
kernel void fc_backward_weights(int n, int in, int out, global const REAL *x,
                                global const REAL *dy, global REAL *dw, global REAL *db) {
    int j = get_global_id(0), o = get_global_id(1);
    if (j > in || o >= out) return;
    if (j < in) dw[(size_t)o * in + j] = fc_weight_grad_at(x, dy, n, in, out, o, j);
    else db[o] = fc_bias_grad_at(dy, n, out, o);
}
