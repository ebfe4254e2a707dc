// FullyConnected: W is (out, in) row-major, b is (out); a batch is rows x (n, in) -> y (n, out).
// y = W x + b;  dx = W^T dy;  dW = sum over the batch of dy x^T;  db = sum over the batch of dy.
// The *_at functions are the maths of one element, shared by these kernels (one example at a
// time) and the fused per-example loop; batches go through the GEMMs of gemm.cl.

// out[j] = sum over k < n of a_j[k * stride] * b_j[k], a_j = a + j a_step and b_j = b + j b_step,
// for j < count (COUNT at most; the pairs past count repeat the last, unstored). Each sum of
// FC_VECTORS_FROM terms or more at a stride of 1: those below n rounded down to a multiple of
// DOT_VW in DOT_VW lanes (lane l: k = l mod DOT_VW), added up by dot_hsum, plus the rest; the
// rest (every term of the other sums) in four interleaved partial sums, (t0 + t1) + (t2 + t3).
// Independent chains keep a CPU's FMA units busy where one chain would wait on each add's
// latency. COUNT sums side by side. Every sum is the same whatever COUNT: fc_dot is fc_dots1.
// One row through fc_forward_at on a 2-core AVX-512 Xeon (PoCL "skylake-avx512"), lanes against
// four scalar chains for every term: 784 x 512 0.37-0.46x the time, 256 x 256 0.38-0.41x, 80 x
// 40 0.57-0.60x, 128 x 10 0.52-0.55x, 64 x 10 0.79-0.87x. Below 64 terms the rest is a large
// share of the sum: added in one chain after the lanes (as gemm_dot adds its last terms), 40 and
// 63 inputs took 1.5x as long; the four chains alone keep the feedforward example's bits.
#define FC_VECTORS_FROM 64
#define FC_DOTS(NAME, COUNT)                                                                  \
void NAME(global const REAL *a, size_t a_step, size_t stride, global const REAL *b,           \
          size_t b_step, int n, int count, REAL *out) {                                       \
    global const REAL *as[COUNT], *bs[COUNT];                                                 \
    dotv acc[COUNT];                                                                          \
    REAL s0[COUNT], s1[COUNT], s2[COUNT], s3[COUNT];                                          \
    _Pragma("unroll")                                                                         \
    for (int j = 0; j < COUNT; ++j) {                                                         \
        as[j] = a + min(j, count - 1) * a_step;                                               \
        bs[j] = b + min(j, count - 1) * b_step;                                               \
        acc[j] = 0;                                                                           \
        s0[j] = s1[j] = s2[j] = s3[j] = 0;                                                    \
    }                                                                                         \
    const int vectors = n < FC_VECTORS_FROM || stride != 1 ? 0 : n / DOT_VW * DOT_VW;         \
    for (int k = 0; k < vectors; k += DOT_VW)                                                 \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < COUNT; ++j)                                                       \
            acc[j] = fma(DOT_VLOAD(0, as[j] + k), DOT_VLOAD(0, bs[j] + k), acc[j]);           \
    int k = vectors;                                                                          \
    for (; k + 4 <= n; k += 4)                                                                \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < COUNT; ++j) {                                                     \
            s0[j] += as[j][k * stride] * bs[j][k];                                            \
            s1[j] += as[j][(k + 1) * stride] * bs[j][k + 1];                                  \
            s2[j] += as[j][(k + 2) * stride] * bs[j][k + 2];                                  \
            s3[j] += as[j][(k + 3) * stride] * bs[j][k + 3];                                  \
        }                                                                                     \
    for (; k < n; ++k)                                                                        \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < COUNT; ++j) s0[j] += as[j][k * stride] * bs[j][k];                \
    _Pragma("unroll")                                                                         \
    for (int j = 0; j < COUNT; ++j)                                                           \
        if (j < count)                                                                        \
            out[j] = vectors ? dot_hsum(acc[j]) + ((s0[j] + s1[j]) + (s2[j] + s3[j]))         \
                             : (s0[j] + s1[j]) + (s2[j] + s3[j]);                            \
}
FC_DOTS(fc_dots1, 1)
FC_DOTS(fc_dots4, 4)
#undef FC_DOTS

// sum over k < n of a[k * stride] * b[k] (fc_dots).
REAL fc_dot(global const REAL *a, size_t stride, global const REAL *b, int n) {
    REAL out;
    fc_dots1(a, 0, stride, b, 0, n, 1, &out);
    return out;
}

REAL fc_forward_at(global const REAL *w, global const REAL *b, global const REAL *x,
                   int in, int o) {
    return fc_dot(w + (size_t)o * in, 1, x, in) + b[o];
}

// y[o .. o + 3] (those below out): fc_forward_at's sums, four side by side (fc_dots4).
void fc_forward_rows(global const REAL *w, global const REAL *b, global const REAL *x, int in,
                     int out, int o, global REAL *y) {
    REAL s[4];
    const int count = min(4, out - o);
    fc_dots4(w + (size_t)o * in, in, 1, x, 0, in, count, s);
    for (int j = 0; j < count; ++j) y[o + j] = s[j] + b[o + j];
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
