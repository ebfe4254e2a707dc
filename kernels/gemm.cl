// Row-major GEMMs for FullyConnected on batches, register-blocked with explicit vectors of VW
// lanes (16 floats or 8 doubles: one 512-bit register; gemm_dot's DOT_VW lanes, below, can be
// fewer). Each work-item computes one block of C,
// any size: see each kernel for its edges. Both run over a batch of products (a convolution's
// samples, each an (F, positions) plane), with `batches` and the strides between them:
//   gemm_dot:   C[m, n] = sum_s sum_k A_s[m * a_m + k] B_s[n * b_n + k] + bias[n]
//               (A_s = A + s a_batch, B_s = B + s b_batch: products summed over the batch)
//   gemm_outer: C_s[m * c_m + n] = sum_k A[m * a_m + k * a_k] B_s[k * b_k + n]
//               (B_s = B + s b_batch, C_s = C + s c_batch: one product per batch entry)

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

// Kernels whose work-items each map a few values (the element-wise activations, the
// optimisers' updates): on CPUs they run in work-groups of 1024 (Device.local_size), where
// PoCL's cost per work-group made the usual 64 1.7-1.9x slower over 131k-407k values.
#define STREAMING __attribute__((work_group_size_hint(1024, 1, 1)))
// Their loop: 8 consecutive values per work-item (global size n / 8 rounded up, as
// device.streaming_size gives), STATEMENT for each value i < n. The whole runs of 8 have no
// bounds check: with one per value PoCL did not vectorise the kernels (over 410k values on AVX2:
// Relu 2.3-2.9x, Logit 1.7-2.2x, Elu 1.5x slower), though the forms bound by their scalar
// calls (Tanh's and Sinusoid's forward, Gelu) were up to 15% faster.
#define STREAMING_EACH(i, n, STATEMENT)                                                       \
    const int i##_first = 8 * get_global_id(0);                                               \
    if (i##_first + 8 <= (n))                                                                 \
        for (int i = i##_first; i < i##_first + 8; ++i) STATEMENT;                            \
    else                                                                                      \
        for (int i = i##_first; i < (n); ++i) STATEMENT;

// The sum of a vector's lanes, in halves: of VW / 2 lanes (one 256-bit register), of VW.
#ifdef REAL_IS_DOUBLE
typedef double4 halfv;
#else
typedef float8 halfv;
#endif
REAL gemm_hsum_half(halfv v) {
#ifdef REAL_IS_DOUBLE
    REAL2 c = v.lo + v.hi;
#else
    float4 a = v.lo + v.hi;
    REAL2 c = a.lo + a.hi;
#endif
    return c.x + c.y;
}

REAL gemm_hsum(realv v) { return gemm_hsum_half(v.lo + v.hi); }

// One work-item's rows of a product with P columns: out_t[p] = sum over k < K of
// a_t[k a_step] B[k P + p] for rows t < count, a_t = a + t a_row and out_t = out + t out_row
// (rows past count repeat the last and are not stored), in order of k, as gemm_outer sums
// (row by row of B: contiguous, vectorisable on a CPU). The fused loop's one-example products:
// FullyConnected's input delta (a = dy, B = W), a Convolution's patches K dy and a
// Deconvolution's K x (a = K's rows), a Deconvolution's input delta K^T patches (a = K's
// columns) and its kernel's gradient (a = the patches' rows, B = x transposed). The sums run
// in registers, ROWS rows x up to four vectors of 8 columns side by side (independent chains
// of FMAs, where one chain would wait on each add's latency), then fewer vectors, then the last
// P % 8 columns one at a time. Every sum is the same whatever ROWS: gemm_row_product is one
// row of gemm_rows_product.
#define ROW_PRODUCT(ROWS, vectors)                                                            \
    for (; p0 + 8 * (vectors) <= P; p0 += 8 * (vectors)) {                                   \
        REAL8 s[ROWS][vectors];                                                               \
        _Pragma("unroll")                                                                     \
        for (int t = 0; t < ROWS; ++t)                                                        \
            _Pragma("unroll")                                                                 \
            for (int j = 0; j < (vectors); ++j) s[t][j] = 0;                                  \
        for (int k = 0; k < K; ++k) {                                                         \
            global const REAL *row = B + (size_t)k * P + p0;                                  \
            REAL8 b[vectors];                                                                 \
            _Pragma("unroll")                                                                 \
            for (int j = 0; j < (vectors); ++j) b[j] = vload8(j, row);                        \
            _Pragma("unroll")                                                                 \
            for (int t = 0; t < ROWS; ++t) {                                                  \
                const REAL av = as[t][(size_t)k * a_step];                                    \
                _Pragma("unroll")                                                             \
                for (int j = 0; j < (vectors); ++j) s[t][j] += av * b[j];                     \
            }                                                                                 \
        }                                                                                     \
        _Pragma("unroll")                                                                     \
        for (int t = 0; t < ROWS; ++t)                                                        \
            if (t < count)                                                                    \
                _Pragma("unroll")                                                             \
                for (int j = 0; j < (vectors); ++j) vstore8(s[t][j], j, outs[t] + p0);        \
    }
#define ROWS_PRODUCT(NAME, ROWS, WIDEST)                                                      \
void NAME(global const REAL *restrict a, int a_row, int a_step, int K,                        \
          global const REAL *restrict B, int P, global REAL *restrict out, int out_row,       \
          int count) {                                                                        \
    global const REAL *as[ROWS];                                                              \
    global REAL *outs[ROWS];                                                                  \
    _Pragma("unroll")                                                                         \
    for (int t = 0; t < ROWS; ++t) {                                                          \
        as[t] = a + (size_t)min(t, count - 1) * a_row;                                        \
        outs[t] = out + (size_t)t * out_row;                                                  \
    }                                                                                         \
    int p0 = 0;                                                                               \
    if (WIDEST >= 4) ROW_PRODUCT(ROWS, 4)                                                     \
    ROW_PRODUCT(ROWS, 2)                                                                      \
    ROW_PRODUCT(ROWS, 1)                                                                      \
    for (; p0 < P; ++p0) {                                                                    \
        REAL sum[ROWS];                                                                       \
        _Pragma("unroll")                                                                     \
        for (int t = 0; t < ROWS; ++t) sum[t] = 0;                                            \
        for (int k = 0; k < K; ++k) {                                                         \
            const REAL bk = B[(size_t)k * P + p0];                                            \
            _Pragma("unroll")                                                                 \
            for (int t = 0; t < ROWS; ++t) sum[t] += as[t][(size_t)k * a_step] * bk;          \
        }                                                                                     \
        _Pragma("unroll")                                                                     \
        for (int t = 0; t < ROWS; ++t)                                                        \
            if (t < count) outs[t][p0] = sum[t];                                              \
    }                                                                                         \
}
ROWS_PRODUCT(gemm_rows_product, 4, 2)
ROWS_PRODUCT(gemm_one_row_product, 1, 4)
#undef ROWS_PRODUCT
#undef ROW_PRODUCT

void gemm_row_product(global const REAL *restrict a, int a_step, int K,
                      global const REAL *restrict B, int P, global REAL *restrict out) {
    gemm_one_row_product(a, 0, a_step, K, B, P, out, 0, 1);
}

// Relu's functions (activations.cl), which gemm_dot and gemm_outer apply to their results where
// a FullyConnected layer's Relu runs in its launches.
REAL relu_forward_at(REAL x);
REAL relu_backward_at(REAL x, REAL dy);
realv relu_forward_v(realv x);
realv relu_backward_v(realv x, realv dy);
// The optimisers' step on VW weights from their gradient g (optimizers.cl), which
// gemm_outer_update takes where a weight gradient's update runs in its GEMM.
void optimizer_lanes(int kind, REAL rate, REAL beta1, REAL beta2, REAL eps, REAL decay, REAL p1,
                     REAL p2, realv g, int own, size_t at, global REAL *w, global REAL *m,
                     global REAL *v);

// Each GEMM is written once, as a template that grenade_py (kernel_library.instantiate) writes
// out at several register-block shapes, $RM etc. as literal constants (gemm_dot_8x2,
// gemm_outer_6x2, ...): the tuner (grenade_py/tune.py) times them on the device and each launch takes the
// fastest for its shape. The block shape changes only which work-item computes an output,
// never the order of its sum: every shape gives the same bits.

// The vectors of gemm_dot and conv_kernel_gradient (sums of dot products, in lanes then
// across them): VW lanes, or DOT_VW where the device's build defines it (CPUs whose
// vectors are 256 bits: 8 floats or 4 doubles, one register, where one of VW lanes takes two and
// a block's operand loads were 10 registers per 12 FMAs; at 1024^3 on AVX2 4x3 in 8 lanes ran at
// 161-172 GFLOP/s, 3x2 in 16 at 104-111).
#ifndef DOT_VW
#define DOT_VW VW
#endif
#define DOT_CAT(a, b) a##b
#define DOT_TYPE(a, b) DOT_CAT(a, b)
typedef DOT_TYPE(REAL, DOT_VW) dotv;
#define DOT_VLOAD DOT_TYPE(vload, DOT_VW)
#if DOT_VW == VW
#define dot_hsum gemm_hsum
#else
#define dot_hsum gemm_hsum_half
#endif

// gemm_dot's inner loop compiles (PoCL 3.1, 4x4, AVX-512) to 8 vector loads and 16 FMAs: its rate
// is that of its operands from L2. Blocking k for L1 was slower there (1024^3 on a
// 2-core Ice Lake Xeon, 147-154 GFLOP/s unblocked): a barrier between blocks of 128-512 k
// 45-92, as PoCL keeps each work-item's accumulators in memory across it; one work-item
// taking 1x4 to 4x4 blocks a block of k at a time, their sums in a private array, 89-130; on a
// 2-core AVX2 EPYC, 4 blocks of 4x3 in 8 lanes by 256 k at a time (the inner loop the same 7
// loads and 12 FMAs) 92 against gemm_dot_4x3's 131 in the same rounds.
// global size (ceil(N / RN), ceil(M / RM), chunks). Rows past the edge of A or B repeat the last
// row (clamped index) and are not stored, so every block takes the vector path. The vectors add
// up over the whole batch first, then the last K % DOT_VW terms of each entry. Chunk c of the
// batch (entries c per .. c per + per - 1; GPUs, where M N outputs are too few work-items) sums
// into C + c M N, the bias in chunk 0's only; one chunk (per = batches): C itself. R, unless
// NULL (one chunk only): relu(C) too, the output of a Relu after FullyConnected's forward.
// template $RM $RN: 8 2, 4 4, 4 2, 6 2, 2 2, 3 2, 2 4, 4 3, 5 2, 3 3, 6 4
kernel void gemm_dot_$RMx$RN(int M, int N, int K, global const REAL *A, int a_m, int a_batch,
                             global const REAL *B, int b_n, int b_batch, int batches, int per,
                             global const REAL *bias, global REAL *C, global REAL *R) {
    const int n0 = get_global_id(0) * $RN, m0 = get_global_id(1) * $RM, chunk = get_global_id(2);
    if (m0 >= M || n0 >= N) return;
    batches = min(batches - chunk * per, per);
    A += (size_t)chunk * per * a_batch;
    B += (size_t)chunk * per * b_batch;
    C += (size_t)chunk * M * N;
    global const REAL *a[$RM], *b[$RN];
    #pragma unroll
    for (int r = 0; r < $RM; ++r) a[r] = A + (size_t)min(m0 + r, M - 1) * a_m;
    #pragma unroll
    for (int c = 0; c < $RN; ++c) b[c] = B + (size_t)min(n0 + c, N - 1) * b_n;
    dotv acc[$RM][$RN];
    #pragma unroll
    for (int r = 0; r < $RM; ++r)
        #pragma unroll
        for (int c = 0; c < $RN; ++c) acc[r][c] = 0;
    const int vectors = K / DOT_VW * DOT_VW;
    for (int s = 0; s < batches; ++s)
        for (int k = 0; k < vectors; k += DOT_VW) {
            const size_t ak = (size_t)s * a_batch + k, bk = (size_t)s * b_batch + k;
            dotv av[$RM], bv[$RN];
            #pragma unroll
            for (int r = 0; r < $RM; ++r) av[r] = DOT_VLOAD(0, a[r] + ak);
            #pragma unroll
            for (int c = 0; c < $RN; ++c) bv[c] = DOT_VLOAD(0, b[c] + bk);
            #pragma unroll
            for (int r = 0; r < $RM; ++r)
                #pragma unroll
                for (int c = 0; c < $RN; ++c) acc[r][c] = fma(av[r], bv[c], acc[r][c]);
        }
    // (Folding the accumulators' lanes in pairs, two vectors' halvings sharing each shuffle
    // and add, gave the same bits at 1.00-1.03x the rate of the tuned blocks at 64..256 x 512 x
    // 784 and 1024^3: these sums are not what bounds the kernel.)
    REAL sum[$RM][$RN];
    #pragma unroll
    for (int r = 0; r < $RM; ++r)
        #pragma unroll
        for (int c = 0; c < $RN; ++c) sum[r][c] = dot_hsum(acc[r][c]);
    // The last terms, each entry's in order, the entries side by side (independent chains).
    for (int s = 0; s < batches; ++s)
        for (int k = vectors; k < K; ++k) {
            const size_t ak = (size_t)s * a_batch + k, bk = (size_t)s * b_batch + k;
            #pragma unroll
            for (int r = 0; r < $RM; ++r)
                #pragma unroll
                for (int c = 0; c < $RN; ++c) sum[r][c] += a[r][ak] * b[c][bk];
        }
    #pragma unroll
    for (int r = 0; r < $RM; ++r)
        #pragma unroll
        for (int c = 0; c < $RN; ++c)
            if (m0 + r < M && n0 + c < N) {
                const size_t at = (size_t)(m0 + r) * N + n0 + c;
                const REAL v = sum[r][c] + (chunk ? 0 : bias[n0 + c]);
                C[at] = v;
                if (R) R[at] = relu_forward_at(v);
            }
}
// end template

// out[i] = the sum over chunks c = 0, 1, ... of partial[c count + i], in that order: the sums
// that gemm_dot (either form) or conv_kernel_gradient wrote chunk by chunk, added up
// deterministically. global size (count)
kernel void gemm_sum_chunks(int count, int chunks, global const REAL *partial,
                            global REAL *out) {
    const int i = get_global_id(0);
    if (i >= count) return;
    REAL s = partial[i];
    for (int c = 1; c < chunks; ++c) s += partial[(size_t)c * count + i];
    out[i] = s;
}

// The sums of gemm_outer's blocks, in a function of m0, n0, M, N, K, A, a_m, a_k, B and b_k:
// `ROWS` rows x `VECTORS` vectors of columns of A B from row m0 and column n0 (N >= VW),
// acc[r][c] holding the columns from cols[c]. Rows past the edge of A repeat the last row
// (clamped index); a vector past the last column moves back to end there (N - VW),
// recomputing columns with the same sums. (A macro: as a function taking the arrays, PoCL 3.1
// kept acc in memory, 1.7-2.2x slower.)
#define GEMM_OUTER_SUMS(ROWS, VECTORS)                                                        \
    global const REAL *a[ROWS];                                                               \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < (ROWS); ++r) a[r] = A + (size_t)min(m0 + r, M - 1) * a_m;             \
    int cols[VECTORS];                                                                        \
    _Pragma("unroll")                                                                         \
    for (int c = 0; c < (VECTORS); ++c) cols[c] = min(n0 + c * VW, N - VW);                   \
    realv acc[ROWS][VECTORS];                                                                 \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < (ROWS); ++r)                                                          \
        _Pragma("unroll")                                                                     \
        for (int c = 0; c < (VECTORS); ++c) acc[r][c] = 0;                                    \
    for (int k = 0; k < K; ++k) {                                                             \
        realv b[VECTORS];                                                                     \
        _Pragma("unroll")                                                                     \
        for (int c = 0; c < (VECTORS); ++c) b[c] = VLOAD(0, B + (size_t)k * b_k + cols[c]);   \
        _Pragma("unroll")                                                                     \
        for (int r = 0; r < (ROWS); ++r) {                                                    \
            const realv ar = (realv)(a[r][(size_t)k * a_k]);                                  \
            _Pragma("unroll")                                                                 \
            for (int c = 0; c < (VECTORS); ++c) acc[r][c] = fma(ar, b[c], acc[r][c]);         \
        }                                                                                     \
    }

// GEMM_OUTER_SUMS' acc copied into sums[ROWS][VECTORS], for a loop over the block that is not
// unrolled (it indexes them at run time, which would keep acc itself in memory through the
// GEMM): gemm_panels' stores, gemm_outer_update's steps.
#define GEMM_OUTER_SUMS_OUT(ROWS, VECTORS)                                                    \
    realv sums[ROWS][VECTORS];                                                                \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < (ROWS); ++r)                                                          \
        _Pragma("unroll")                                                                     \
        for (int c = 0; c < (VECTORS); ++c) sums[r][c] = acc[r][c];

// Panels: B (N, K) row-major (FullyConnected's W) as k-major panels of PANEL columns of B^T,
// Bp[(p K + k) PANEL + w] = B[(p PANEL + w) b_n + k], rows past N repeating the last: what
// gemm_panels reads, each k's PANEL values contiguous. (At 1024^3 on a 2-core AVX-512 Xeon,
// gemm_dot ran at 204 GFLOP/s with the operands' rows 4 KiB apart, 219-223 with them 4160-4352
// bytes apart, which spreads them over more sets of L1; gemm_panels' kernel alone at 250-266.
// See FullyConnected.forward for the rates with the packing.)
#define PANEL (4 * VW)

// global size (PANEL, ceil(K / VW), ceil(N / PANEL)): a work-item's VW values of k of one row of
// a panel, loaded as a vector and stored one by one, PANEL values apart: the work-items along
// dimension 0 (PoCL's vectors) store each k's row of the panel together. On a 2-core AVX-512
// EPYC (PoCL 3.1), taking turns, 0.67-0.79x the time (float32) and 0.54-0.76x (float64) of VW x
// VW blocks transposed in registers by shuffles (512 x 784: 105 us against 133; 1024^2: 230
// against 341; 300 x 784: 66 against 86); alike at 100 x 37 and 65 x 17 (4-10 us).
kernel void gemm_pack_panels(int N, int K, global const REAL *B, int b_n, global REAL *Bp) {
    const int w = get_global_id(0), k0 = get_global_id(1) * VW, p = get_global_id(2);
    if (w >= PANEL || k0 >= K) return;
    global const REAL *row = B + (size_t)min(p * PANEL + w, N - 1) * b_n;
    global REAL *out = Bp + ((size_t)p * K + k0) * PANEL + w;
    if (k0 + VW <= K) {
        REAL lanes[VW];
        VSTORE(VLOAD(0, row + k0), 0, lanes);
        #pragma unroll
        for (int j = 0; j < VW; ++j) out[j * PANEL] = lanes[j];
    } else {
        for (int k = k0; k < K; ++k) out[(k - k0) * PANEL] = row[k];
    }
}

// B (K, N) row-major, rows b_k apart, as panels of its PANEL-column strips, Bp[(p K + k)
// PANEL + w] = B[k b_k + p PANEL + w], N a multiple of PANEL: gemm_outer's B over the batch of
// panels (FullyConnected's input delta where W is large: `gemm.gemm_outer_panels`).
// global size (K, N / PANEL)
kernel void gemm_copy_panels(int K, global const REAL *B, int b_k, global REAL *Bp) {
    const int k = get_global_id(0), p = get_global_id(1);
    if (k >= K) return;
    global const REAL *row = B + (size_t)k * b_k + p * PANEL;
    global REAL *out = Bp + ((size_t)p * K + k) * PANEL;
    #pragma unroll
    for (int c = 0; c < 4; ++c) VSTORE(VLOAD(c, row), c, out);
}

// template $RM $CV: 6 4, 5 4, 4 4, 12 2, 8 2, 6 2
// C = A B^T + bias from B's panels (gemm_pack_panels), C having `columns` columns: gemm_outer's
// sums (GEMM_OUTER_SUMS over the block's panel, A's rows contiguous), then + bias[n]. A
// work-item's block: $RM rows x $CV vectors of a panel's 4. Rows past M repeat the last
// (clamped index) and are not stored, nor are columns past `columns`. R, unless NULL: relu(C)
// too, as gemm_dot's. global size (ceil(columns / PANEL) 4 / $CV, ceil(M / $RM)).
kernel void gemm_panels_$RMx$CV(int M, int columns, int K, global const REAL *A, int a_m,
                                global const REAL *Bp, global const REAL *bias, global REAL *C,
                                global REAL *R) {
    const int q = get_global_id(0) * $CV, m0 = get_global_id(1) * $RM, first = q * VW;
    if (m0 >= M || first >= columns) return;
    // The panel as GEMM_OUTER_SUMS' B: PANEL columns, k PANEL apart, this block's from n0.
    global const REAL *B = Bp + (size_t)(q / 4) * K * PANEL;
    const int N = PANEL, n0 = (q % 4) * VW, a_k = 1, b_k = PANEL;
    GEMM_OUTER_SUMS($RM, $CV)
    // The stores in a loop, not unrolled (as gemm_outer_update's steps): PoCL's first launch of
    // a block took 0.17-0.20 s, against 0.75-1.11 s for RM CV copies of the stores and their
    // scalar tail; the kernel's time at 256 x 512 x 784 and 1024^3 moved by -0.5% to +1.9%.
    GEMM_OUTER_SUMS_OUT($RM, $CV)
    #pragma unroll 1
    for (int r = 0; r < min($RM, M - m0); ++r)
        #pragma unroll 1
        for (int c = 0; c < $CV; ++c) {
            const int n = first + c * VW;
            const size_t at = (size_t)(m0 + r) * columns + n;
            if (n + VW <= columns) {
                const realv v = sums[r][c] + VLOAD(0, bias + n);
                VSTORE(v, 0, C + at);
                if (R) VSTORE(relu_forward_v(v), 0, R + at);
            } else if (n < columns) {
                REAL lanes[VW];
                VSTORE(sums[r][c], 0, lanes);
                for (int l = 0; l < columns - n; ++l) {
                    const REAL v = lanes[l] + bias[n + l];
                    C[at + l] = v;
                    if (R) R[at + l] = relu_forward_at(v);
                }
            }
        }
}
// end template

// template $RM $CV: 16 1, 8 1, 12 1, 24 1, 6 2, 8 2, 12 2, 4 1, 6 1, 8 3, 6 4
// The block of C = A B from row m0 and column n0 (GEMM_OUTER_SUMS): rows past the edge of A are
// not stored, and a vector moved back stores only the columns from n0 on (the block's own);
// a product narrower than one vector has all its columns in one vector, with the same sums
// (by fma, k in order). Y, unless NULL: the input of a Relu (laid out as C) whose input delta
// C then is (relu_backward_at(Y, A B)): a FullyConnected layer's input delta through the Relu
// below it. (Also the product of conv_input_delta.)
void gemm_outer_block_$RMx$CV(int m0, int n0, int M, int N, int K, global const REAL *A,
                              int a_m, int a_k, global const REAL *B, int b_k, global REAL *C,
                              int c_m, global const REAL *Y) {
    if (N >= VW) {
        GEMM_OUTER_SUMS($RM, $CV)
        // A block within one vector of N (the row's last) has every vector moved back to
        // N - VW, past n0 (their first columns another block's): the first alone is stored,
        // lane by lane, after the loop and in a loop not unrolled (RM CV copies of that made
        // PoCL's first launch of a block take up to 2x as long; the kernel's time the same).
        const int back = cols[0] < n0;
        #pragma unroll
        for (int r = 0; r < $RM; ++r)
            if (m0 + r < M)
                #pragma unroll
                for (int c = 0; c < $CV; ++c) {
                    const size_t at = (size_t)(m0 + r) * c_m + cols[c];
                    if (Y) acc[r][c] = relu_backward_v(VLOAD(0, Y + at), acc[r][c]);
                    if (cols[c] >= n0) VSTORE(acc[r][c], 0, C + at);
                }
        if (back) {
            realv first[$RM];
            #pragma unroll
            for (int r = 0; r < $RM; ++r) first[r] = acc[r][0];
            #pragma unroll 1
            for (int r = 0; r < min($RM, M - m0); ++r) {
                REAL lanes[VW];
                VSTORE(first[r], 0, lanes);
                global REAL *row = C + (size_t)(m0 + r) * c_m + cols[0];
                for (int l = n0 - cols[0]; l < VW; ++l) row[l] = lanes[l];
            }
        }
    } else {  // N < VW (n0 0): the row's N columns in one vector's lanes, lanes past N
        // repeating the last column (loaded lane by lane: a vector load could run past B)
        global const REAL *a[$RM];
        #pragma unroll
        for (int r = 0; r < $RM; ++r) a[r] = A + (size_t)min(m0 + r, M - 1) * a_m;
        realv acc[$RM];
        #pragma unroll
        for (int r = 0; r < $RM; ++r) acc[r] = 0;
        for (int k = 0; k < K; ++k) {
            REAL lanes[VW];
            #pragma unroll
            for (int l = 0; l < VW; ++l) lanes[l] = B[(size_t)k * b_k + min(l, N - 1)];
            const realv b = VLOAD(0, lanes);
            #pragma unroll
            for (int r = 0; r < $RM; ++r) acc[r] = fma((realv)(a[r][(size_t)k * a_k]), b, acc[r]);
        }
        #pragma unroll
        for (int r = 0; r < $RM; ++r)
            if (m0 + r < M) {
                REAL sums[VW];
                VSTORE(acc[r], 0, sums);
                for (int n = 0; n < N; ++n) {
                    const size_t at = (size_t)(m0 + r) * c_m + n;
                    C[at] = Y ? relu_backward_at(Y[at], sums[n]) : sums[n];
                }
            }
    }
}

// global size (ceil(N / (CV VW)), ceil(M / RM), batches): a block per work-item.
kernel void gemm_outer_$RMx$CV(int M, int N, int K, global const REAL *A, int a_m, int a_k,
                               global const REAL *B, int b_k, int b_batch, global REAL *C,
                               int c_m, int c_batch, global const REAL *Y) {
    const int n0 = get_global_id(0) * $CV * VW, m0 = get_global_id(1) * $RM;
    if (m0 >= M || n0 >= N) return;
    const size_t c_at = get_global_id(2) * (size_t)c_batch;
    gemm_outer_block_$RMx$CV(m0, n0, M, N, K, A, a_m, a_k, B + get_global_id(2) * (size_t)b_batch,
                             b_k, C + c_at, c_m, Y ? Y + c_at : Y);
}

// The optimiser's step on weights W (M, N), N >= VW, whose gradient is A B (as gemm_outer): each
// work-item's block of sums is the gradient of its weights, which it steps (optimizer_lanes:
// W, its momentum Mo and second moment V) where gemm_outer would store it: the weight
// gradient's GEMM and the update in one launch, the gradient never stored. Each weight is
// stepped once: a vector moved back steps only the columns past the block's vectors before it.
// The optimiser as the update kernels take it (optimizers.cl), its kind too. global size
// (ceil(N / (CV VW)), ceil(M / RM)).
kernel void gemm_outer_update_$RMx$CV(int M, int N, int K, global const REAL *A, int a_m,
                                      int a_k, global const REAL *B, int b_k, int kind,
                                      REAL rate, REAL beta1, REAL beta2, REAL eps, REAL decay,
                                      REAL p1, REAL p2, global REAL *W, global REAL *Mo,
                                      global REAL *V) {
    const int n0 = get_global_id(0) * $CV * VW, m0 = get_global_id(1) * $RM;
    if (m0 >= M || n0 >= N) return;
    GEMM_OUTER_SUMS($RM, $CV)
    // The steps in a loop, not unrolled: optimizer_lanes, inlined, is then compiled once (each
    // of RM CV copies of its three rules made PoCL's first launch of a 24x1 block take 1.7 s
    // instead of 0.2).
    GEMM_OUTER_SUMS_OUT($RM, $CV)
    #pragma unroll 1
    for (int r = 0; r < min($RM, M - m0); ++r)
        #pragma unroll 1
        for (int c = 0; c < $CV; ++c) {
            const int col = min(n0 + c * VW, N - VW);  // cols[c]
            optimizer_lanes(kind, rate, beta1, beta2, eps, decay, p1, p2, sums[r][c],
                            max(0, n0 + c * VW - col), (size_t)(m0 + r) * N + col, W, Mo, V);
        }
}
// end template

// global size (ceil(N / 8)): C[n] = sum_k A[k, n] in order of k, A (K, N) row-major (a bias
// gradient), and At (N, K) = A transposed, 8 columns per work-item. The weight gradient's
// gemm_outer reads dy^T as At's contiguous rows rather than through A's strides, where each k's
// few values lie in a cache line of their own: on AVX2 at 512 x 784 x 32..256, 7-12% faster
// with the transpose (which costs 8-60 us more than the sums alone). An 8 x 8 block of A at a
// time, each of its columns stored as one vector of At: at 64/128/256 x 512 on a 2-core Ice Lake
// Xeon 0.57-0.69x the time of 8 scalar stores per row of A (taking turns, 55 rounds).
kernel void gemm_transpose_sums(int K, int N, global const REAL *A, global REAL *At,
                                global REAL *C) {
    const int n0 = get_global_id(0) * 8;
    if (n0 >= N) return;
    if (n0 + 8 <= N) {
        REAL8 acc = 0;
        int k = 0;
        for (; k + 8 <= K; k += 8) {
            REAL block[8][8];
            #pragma unroll
            for (int i = 0; i < 8; ++i) {
                const REAL8 a = vload8(0, A + (size_t)(k + i) * N + n0);
                acc += a;
                vstore8(a, 0, block[i]);
            }
            #pragma unroll
            for (int c = 0; c < 8; ++c)
                vstore8((REAL8)(block[0][c], block[1][c], block[2][c], block[3][c], block[4][c],
                                block[5][c], block[6][c], block[7][c]), 0,
                        At + (size_t)(n0 + c) * K + k);
        }
        for (; k < K; ++k) {
            const REAL8 a = vload8(0, A + (size_t)k * N + n0);
            acc += a;
            global REAL *column = At + (size_t)n0 * K + k;
            column[0] = a.s0;
            column[K] = a.s1;
            column[2 * K] = a.s2;
            column[3 * K] = a.s3;
            column[4 * K] = a.s4;
            column[5 * K] = a.s5;
            column[6 * K] = a.s6;
            column[7 * K] = a.s7;
        }
        vstore8(acc, 0, C + n0);
    } else {
        for (int n = n0; n < N; ++n) {
            REAL s = 0;
            for (int k = 0; k < K; ++k) {
                const REAL a = A[(size_t)k * N + n];
                s += a;
                At[(size_t)n * K + k] = a;
            }
            C[n] = s;
        }
    }
}

// The device's multiply-add rate, measured (the benchmark's peak): $CH independent chains of
// vector FMAs per work-item, `iterations` steps each, x <- x m + c; out[i] = the sum of every
// lane of every chain, for i < n (the global size may be rounded up). 2 * $CH * VW * iterations
// flops per work-item. 8 chains keep 8 FMAs in flight per core's two units on AVX-512; on AVX2
// (two registers a vector) they take all 16 registers and spill, where 6 fit.
// template $CH: 6, 8
kernel void peak_fma_$CH(int n, int iterations, REAL m, REAL c, global REAL *out) {
    if (get_global_id(0) >= n) return;
    realv x[$CH];
    #pragma unroll
    for (int j = 0; j < $CH; ++j) x[j] = (realv)(get_global_id(0) + j);
    for (int i = 0; i < iterations; ++i)
        #pragma unroll
        for (int j = 0; j < $CH; ++j) x[j] = fma(x[j], (realv)(m), (realv)(c));
    realv s = x[0];
    #pragma unroll
    for (int j = 1; j < $CH; ++j) s += x[j];
    out[get_global_id(0)] = gemm_hsum(s);
}
// end template
