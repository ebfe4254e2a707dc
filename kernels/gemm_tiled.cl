// Local-memory tiled GEMMs for GPUs, the same products as gemm.cl (row-major):
//   gemm_dot_tiled:   C[m, n] = sum_s sum_k A_s[m * a_m + k] B_s[n * b_n + k] + bias[n]
//   gemm_outer_tiled: C_s[m * c_m + n] = sum_k A[m * a_m + k * a_k] B_s[k * b_k + n]
// (A_s = A + s a_batch and so on: gemm.cl says what the batches are.)
// A work-group of ($TN / $WN, $TM / $WM) work-items computes a $TM x $TN tile of C, each
// work-item $WM x $WN outputs in registers; the operands pass through local memory $TK values of
// k at a time, loaded by consecutive work-items from consecutive addresses where the operand's
// layout allows. Edges are padded with zeros in local memory and not stored. Every tile shape
// sums each output in the same order (k ascending, one fma at a time): the same bits.
// The tile shapes are a template, as gemm.cl's register blocks are (the kernel is
// gemm_dot_tiled_$TMx$TNx$TKx$WMx$WN): the tuner (grenade_py/blocks.py) times those the device's
// work-group and local memory limits allow and each launch takes the fastest for its shape.

// template $TM $TN $TK $WM $WN: 64 64 16 4 4, 32 32 16 4 4, 16 16 8 2 2, 8 8 8 2 2, 128 128 8 8 8, 128 128 16 8 8, 128 64 16 8 4, 64 64 8 4 4, 32 64 16 4 4
// Stage rows r0 .. r0 + rows of operand X (X[r, k] at X[r * x_r + k * x_k]), for k0 .. k0 + $TK,
// into Xs[kk * (rows + 1) + rr]; consecutive work-items take consecutive addresses of X
// (consecutive k when k is the unit stride, else consecutive rows). Past the edges: zeros.
// The one word of padding per kk: where k is the unit stride, the work-items of one row write
// kk = 0, 1, ... at once, which rows words apart (32, 64 or 128 for the larger tiles) would all
// fall in one of 32 banks of local memory (a 16-way conflict at $TK = 16); rows + 1 apart,
// in as many banks as there are work-items.
void gemm_stage_$TMx$TNx$TKx$WMx$WN(local REAL *Xs, int rows, global const REAL *X, int x_r,
                                    int x_k, int r0, int R, int k0, int K, int t) {
    const int threads = ($TN / $WN) * ($TM / $WM);
    for (int idx = t; idx < rows * $TK; idx += threads) {
        int rr = x_k == 1 ? idx / $TK : idx % rows;
        int kk = x_k == 1 ? idx % $TK : idx / rows;
        int r = r0 + rr, k = k0 + kk;
        Xs[kk * (rows + 1) + rr] = r < R && k < K ? X[(size_t)r * x_r + (size_t)k * x_k] : 0;
    }
}

// C[m * c_m + n] = sum_s sum_k A_s[m * a_m + k * a_k] B_s[n * b_n + k * b_k] (+ bias[n] if bias
// is given) for this work-group's tile, A_s = A + s a_batch, B_s = B + s b_batch. Work-item
// (tn, tm) owns rows tm + i * ($TM / $WM) and columns tn + j * ($TN / $WN) of it, so
// neighbouring work-items read neighbouring local words.
void gemm_tile_$TMx$TNx$TKx$WMx$WN(int M, int N, int K, global const REAL *A, int a_m, int a_k,
                                   int a_batch, global const REAL *B, int b_n, int b_k,
                                   int b_batch, int batches, global const REAL *bias,
                                   global REAL *C, int c_m, local REAL *As, local REAL *Bs) {
    const int ln = $TN / $WN, lm = $TM / $WM;
    const int tn = get_local_id(0), tm = get_local_id(1), t = tm * ln + tn;
    const int n0 = get_group_id(0) * $TN, m0 = get_group_id(1) * $TM;
    REAL acc[$WM][$WN];
    for (int i = 0; i < $WM; ++i)
        for (int j = 0; j < $WN; ++j) acc[i][j] = 0;
    for (int s = 0; s < batches; ++s)
    for (int k0 = 0; k0 < K; k0 += $TK) {
        gemm_stage_$TMx$TNx$TKx$WMx$WN(As, $TM, A + (size_t)s * a_batch, a_m, a_k, m0, M, k0, K,
                                       t);
        gemm_stage_$TMx$TNx$TKx$WMx$WN(Bs, $TN, B + (size_t)s * b_batch, b_n, b_k, n0, N, k0, K,
                                       t);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < $TK; ++kk) {
            REAL a[$WM], b[$WN];
            for (int i = 0; i < $WM; ++i) a[i] = As[kk * ($TM + 1) + tm + i * lm];
            for (int j = 0; j < $WN; ++j) b[j] = Bs[kk * ($TN + 1) + tn + j * ln];
            for (int i = 0; i < $WM; ++i)
                for (int j = 0; j < $WN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < $WM; ++i)
        for (int j = 0; j < $WN; ++j) {
            int m = m0 + tm + i * lm, n = n0 + tn + j * ln;
            if (m < M && n < N) C[(size_t)m * c_m + n] = acc[i][j] + (bias ? bias[n] : 0);
        }
}

// local size ($TN / $WN, $TM / $WM); global size (ceil(N / $TN) $TN / $WN, ceil(M / $TM) $TM / $WM,
// chunks): chunk c of the batch as gemm.cl's gemm_dot sums it (into C + c M N, the bias in chunk
// 0's only)
kernel void gemm_dot_tiled_$TMx$TNx$TKx$WMx$WN(int M, int N, int K, global const REAL *A,
                                                int a_m, int a_batch, global const REAL *B,
                                                int b_n, int b_batch, int batches, int per,
                                                global const REAL *bias, global REAL *C) {
    local REAL As[$TK * ($TM + 1)], Bs[$TK * ($TN + 1)];
    const int chunk = get_group_id(2);
    gemm_tile_$TMx$TNx$TKx$WMx$WN(M, N, K, A + (size_t)chunk * per * a_batch, a_m, 1, a_batch,
                                  B + (size_t)chunk * per * b_batch, b_n, 1, b_batch,
                                  min(batches - chunk * per, per), chunk ? 0 : bias,
                                  C + (size_t)chunk * M * N, N, As, Bs);
}

// local size as gemm_dot_tiled's; global size as gemm_dot_tiled's by batches
kernel void gemm_outer_tiled_$TMx$TNx$TKx$WMx$WN(int M, int N, int K, global const REAL *A,
                                                  int a_m, int a_k, global const REAL *B,
                                                  int b_k, int b_batch, global REAL *C,
                                                  int c_m, int c_batch) {
    local REAL As[$TK * ($TM + 1)], Bs[$TK * ($TN + 1)];
    gemm_tile_$TMx$TNx$TKx$WMx$WN(M, N, K, A, a_m, a_k, 0, B + get_group_id(2) * (size_t)b_batch,
                                  1, b_k, 0, 1, 0, C + get_group_id(2) * (size_t)c_batch, c_m,
                                  As, Bs);
}
// end template
