// Row-major GEMMs for FullyConnected on batches, register-blocked with explicit vectors of VW
// lanes (16 floats or 8 doubles: one 512-bit register). Each work-item computes one block of C;
// blocks at the edges of C take a plain scalar path, so any size is correct.
//   gemm_dot:   C[m, n] = sum_k A[m, k] B[n, k] + bias[n]     both operands contiguous in k
//   gemm_outer: C[m, n] = sum_k A[m * a_m + k * a_k] B[k, n]  B and C contiguous in n

#ifdef REAL_IS_DOUBLE
#define VW 8
typedef double8 realv;
#define VLOAD vload8
#define VSTORE vstore8
#else
#define VW 16
typedef float16 realv;
#define VLOAD vload16
#define VSTORE vstore16
#endif

REAL gemm_hsum(realv v) {
#ifdef REAL_IS_DOUBLE
    double4 a = v.lo + v.hi;
#else
    float8 b = v.lo + v.hi;
    float4 a = b.lo + b.hi;
#endif
    REAL2 c = a.lo + a.hi;
    return c.x + c.y;
}

#define DOT_RM 4
#define DOT_RN 4

// global size (ceil(N / DOT_RN), ceil(M / DOT_RM))
kernel void gemm_dot(int M, int N, int K, global const REAL *A, global const REAL *B,
                     global const REAL *bias, global REAL *C) {
    const int n0 = get_global_id(0) * DOT_RN, m0 = get_global_id(1) * DOT_RM;
    if (m0 >= M || n0 >= N) return;
    if (m0 + DOT_RM <= M && n0 + DOT_RN <= N) {
        realv acc[DOT_RM][DOT_RN];
        #pragma unroll
        for (int r = 0; r < DOT_RM; ++r)
            #pragma unroll
            for (int c = 0; c < DOT_RN; ++c) acc[r][c] = 0;
        int k = 0;
        for (; k + VW <= K; k += VW) {
            realv a[DOT_RM], b[DOT_RN];
            #pragma unroll
            for (int r = 0; r < DOT_RM; ++r) a[r] = VLOAD(0, A + (size_t)(m0 + r) * K + k);
            #pragma unroll
            for (int c = 0; c < DOT_RN; ++c) b[c] = VLOAD(0, B + (size_t)(n0 + c) * K + k);
            #pragma unroll
            for (int r = 0; r < DOT_RM; ++r)
                #pragma unroll
                for (int c = 0; c < DOT_RN; ++c) acc[r][c] = fma(a[r], b[c], acc[r][c]);
        }
        #pragma unroll
        for (int r = 0; r < DOT_RM; ++r)
            #pragma unroll
            for (int c = 0; c < DOT_RN; ++c) {
                REAL s = gemm_hsum(acc[r][c]);
                for (int kk = k; kk < K; ++kk)
                    s += A[(size_t)(m0 + r) * K + kk] * B[(size_t)(n0 + c) * K + kk];
                C[(size_t)(m0 + r) * N + n0 + c] = s + bias[n0 + c];
            }
    } else {
        for (int m = m0; m < min(M, m0 + DOT_RM); ++m)
            for (int n = n0; n < min(N, n0 + DOT_RN); ++n) {
                global const REAL *a = A + (size_t)m * K, *b = B + (size_t)n * K;
                realv v = 0;
                int k = 0;
                for (; k + VW <= K; k += VW) v = fma(VLOAD(0, a + k), VLOAD(0, b + k), v);
                REAL s = gemm_hsum(v);
                for (; k < K; ++k) s += a[k] * b[k];
                C[(size_t)m * N + n] = s + bias[n];
            }
    }
}

#define OUT_RM 16
#define OUT_CV 1
#define OUT_CN (OUT_CV * VW)

// global size (ceil(N / OUT_CN), ceil(M / OUT_RM))
kernel void gemm_outer(int M, int N, int K, global const REAL *A, int a_m, int a_k,
                       global const REAL *B, global REAL *C) {
    const int n0 = get_global_id(0) * OUT_CN, m0 = get_global_id(1) * OUT_RM;
    if (m0 >= M || n0 >= N) return;
    if (m0 + OUT_RM <= M && n0 + OUT_CN <= N) {
        realv acc[OUT_RM][OUT_CV];
        #pragma unroll
        for (int r = 0; r < OUT_RM; ++r)
            #pragma unroll
            for (int c = 0; c < OUT_CV; ++c) acc[r][c] = 0;
        for (int k = 0; k < K; ++k) {
            realv b[OUT_CV];
            #pragma unroll
            for (int c = 0; c < OUT_CV; ++c) b[c] = VLOAD(0, B + (size_t)k * N + n0 + c * VW);
            #pragma unroll
            for (int r = 0; r < OUT_RM; ++r) {
                realv a = (realv)(A[(size_t)(m0 + r) * a_m + (size_t)k * a_k]);
                #pragma unroll
                for (int c = 0; c < OUT_CV; ++c) acc[r][c] = fma(a, b[c], acc[r][c]);
            }
        }
        #pragma unroll
        for (int r = 0; r < OUT_RM; ++r)
            #pragma unroll
            for (int c = 0; c < OUT_CV; ++c)
                VSTORE(acc[r][c], 0, C + (size_t)(m0 + r) * N + n0 + c * VW);
    } else {  // one row at a time, whole vectors where they fit
        for (int m = m0; m < min(M, m0 + OUT_RM); ++m)
            for (int n = n0; n < min(N, n0 + OUT_CN); n += VW) {
                if (n + VW <= N) {
                    realv v = 0;
                    for (int k = 0; k < K; ++k)
                        v = fma((realv)(A[(size_t)m * a_m + (size_t)k * a_k]),
                                VLOAD(0, B + (size_t)k * N + n), v);
                    VSTORE(v, 0, C + (size_t)m * N + n);
                } else {
                    for (int nn = n; nn < N; ++nn) {
                        REAL s = 0;
                        for (int k = 0; k < K; ++k)
                            s += A[(size_t)m * a_m + (size_t)k * a_k] * B[(size_t)k * N + nn];
                        C[(size_t)m * N + nn] = s;
                    }
                }
            }
    }
}
