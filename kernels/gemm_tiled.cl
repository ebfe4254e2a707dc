// Local-memory tiled GEMMs for GPUs, the same products as gemm.cl (row-major):
//   gemm_dot_tiled:   C[m, n] = sum_s sum_k A_s[m * a_m + k] B_s[n * b_n + k] + bias[n]
//   gemm_outer_tiled: C_s[m * c_m + n] = sum_k A[m * a_m + k * a_k] B_s[k * b_k + n]
// (A_s = A + s a_batch and so on: gemm.cl says what the batches are.)
// A work-group of (GEMM_TN / GEMM_WN, GEMM_TM / GEMM_WM) work-items computes a GEMM_TM x GEMM_TN
// tile of C, each work-item GEMM_WM x GEMM_WN outputs in registers; the operands pass through
// local memory GEMM_TK values of k at a time, loaded by consecutive work-items from consecutive
// addresses where the operand's layout allows. The tile sizes come from the device's limits
// (grenade_py/gemm.py) and are set when the library is built for the device. Edges are padded
// with zeros in local memory and not stored.

#ifndef GEMM_TM
#define GEMM_TM 32
#define GEMM_TN 32
#define GEMM_TK 16
#define GEMM_WM 4
#define GEMM_WN 4
#endif
#define GEMM_LN (GEMM_TN / GEMM_WN)
#define GEMM_LM (GEMM_TM / GEMM_WM)

// Stage rows r0 .. r0 + rows of operand X (X[r, k] at X[r * x_r + k * x_k]), for k0 .. k0 + GEMM_TK,
// into Xs[kk * rows + rr]; consecutive work-items take consecutive addresses of X (consecutive
// k when k is the unit stride, else consecutive rows). Past the edges: zeros.
void gemm_stage(local REAL *Xs, int rows, global const REAL *X, int x_r, int x_k, int r0,
                int R, int k0, int K, int t) {
    const int threads = GEMM_LN * GEMM_LM;
    for (int idx = t; idx < rows * GEMM_TK; idx += threads) {
        int rr = x_k == 1 ? idx / GEMM_TK : idx % rows;
        int kk = x_k == 1 ? idx % GEMM_TK : idx / rows;
        int r = r0 + rr, k = k0 + kk;
        Xs[kk * rows + rr] = r < R && k < K ? X[(size_t)r * x_r + (size_t)k * x_k] : 0;
    }
}

// C[m * c_m + n] = sum_s sum_k A_s[m * a_m + k * a_k] B_s[n * b_n + k * b_k] (+ bias[n] if bias
// is given) for this work-group's tile, A_s = A + s a_batch, B_s = B + s b_batch. Work-item
// (tn, tm) owns rows tm + i * GEMM_LM and columns tn + j * GEMM_LN of it, so neighbouring
// work-items read neighbouring local words.
void gemm_tile(int M, int N, int K, global const REAL *A, int a_m, int a_k, int a_batch,
               global const REAL *B, int b_n, int b_k, int b_batch, int batches,
               global const REAL *bias, global REAL *C, int c_m, local REAL *As,
               local REAL *Bs) {
    const int tn = get_local_id(0), tm = get_local_id(1), t = tm * GEMM_LN + tn;
    const int n0 = get_group_id(0) * GEMM_TN, m0 = get_group_id(1) * GEMM_TM;
    REAL acc[GEMM_WM][GEMM_WN];
    for (int i = 0; i < GEMM_WM; ++i)
        for (int j = 0; j < GEMM_WN; ++j) acc[i][j] = 0;
    for (int s = 0; s < batches; ++s)
    for (int k0 = 0; k0 < K; k0 += GEMM_TK) {
        gemm_stage(As, GEMM_TM, A + (size_t)s * a_batch, a_m, a_k, m0, M, k0, K, t);
        gemm_stage(Bs, GEMM_TN, B + (size_t)s * b_batch, b_n, b_k, n0, N, k0, K, t);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < GEMM_TK; ++kk) {
            REAL a[GEMM_WM], b[GEMM_WN];
            for (int i = 0; i < GEMM_WM; ++i) a[i] = As[kk * GEMM_TM + tm + i * GEMM_LM];
            for (int j = 0; j < GEMM_WN; ++j) b[j] = Bs[kk * GEMM_TN + tn + j * GEMM_LN];
            for (int i = 0; i < GEMM_WM; ++i)
                for (int j = 0; j < GEMM_WN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < GEMM_WM; ++i)
        for (int j = 0; j < GEMM_WN; ++j) {
            int m = m0 + tm + i * GEMM_LM, n = n0 + tn + j * GEMM_LN;
            if (m < M && n < N) C[(size_t)m * c_m + n] = acc[i][j] + (bias ? bias[n] : 0);
        }
}

// local size (GEMM_LN, GEMM_LM); global size (ceil(N / GEMM_TN) GEMM_LN, ceil(M / GEMM_TM) GEMM_LM)
kernel void gemm_dot_tiled(int M, int N, int K, global const REAL *A, int a_m, int a_batch,
                           global const REAL *B, int b_n, int b_batch, int batches,
                           global const REAL *bias, global REAL *C) {
    local REAL As[GEMM_TK * GEMM_TM], Bs[GEMM_TK * GEMM_TN];
    gemm_tile(M, N, K, A, a_m, 1, a_batch, B, b_n, 1, b_batch, batches, bias, C, N, As, Bs);
}

// local size as gemm_dot_tiled; global size as gemm_dot_tiled's by batches
kernel void gemm_outer_tiled(int M, int N, int K, global const REAL *A, int a_m, int a_k,
                             global const REAL *B, int b_k, int b_batch, global REAL *C,
                             int c_m, int c_batch) {
    local REAL As[GEMM_TK * GEMM_TM], Bs[GEMM_TK * GEMM_TN];
    gemm_tile(M, N, K, A, a_m, a_k, 0, B + get_group_id(2) * (size_t)b_batch, 1, b_k, 0, 1, 0,
              C + get_group_id(2) * (size_t)c_batch, c_m, As, Bs);
}
