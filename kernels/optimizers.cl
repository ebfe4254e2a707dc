// The optimisers, element by element over flat buffers: w the parameters, m the first moment
// (SGD's momentum), v the second moment (Adam's), g the gradient. Every training path (the
// minibatch update, the fused per-example loop, the recurrent per-step updates) steps through
// optimizer_step, so each rule is written once:
//   SGD (Grenade's descend):  m' = momentum m - rate g;  w' = w + m' - rate l2 w
//   Adam (torch.optim.Adam):  g += wd w;  m' = m + (1 - b1)(g - m);  v' = b2 v + (1 - b2) g g;
//                             w' = w - rate / (1 - b1^t) * m' / (sqrt(v') / sqrt(1 - b2^t) + eps)
//                             computed as w - a m' / (sqrt(v') + e), a = rate sqrt(1 - b2^t) /
//                             (1 - b1^t) and e = eps sqrt(1 - b2^t) (Kingma and Ba's section 2):
//                             the same value, one division a parameter where torch has two
//                             (the kernel took 0.8x the time), and rounded otherwise.
//   AdamW (torch.optim.AdamW): w *= 1 - rate wd, then Adam without the wd term.
// `decay` is l2 or wd, 0 for parameters that are not regularised.

#define OPTIMIZER_SGD 0
#define OPTIMIZER_ADAM 1
#define OPTIMIZER_ADAMW 2

// beta1 is SGD's momentum. p1 = b1^t and p2 = b2^t at Adam's step t, formed as b1 multiplied
// into 1, t times in REAL (the caller gives them for a launch's first step, formed so by
// grenade_py.optimizers.power; optimizer_next advances them by one product each step: every
// path gives the same bits however its steps fall into launches); a and e are the step's size
// and epsilon above, formed from them.
typedef struct {
    int kind;
    REAL rate, beta1, beta2, eps, p1, p2, a, e;
} optimizer;

// p1 and p2 given, a and e formed from them.
optimizer optimizer_with_powers(optimizer o) {
    if (o.kind != OPTIMIZER_SGD) {
        const REAL c2 = sqrt(1 - o.p2);
        o.a = o.rate * c2 / (1 - o.p1);
        o.e = o.eps * c2;
    }
    return o;
}

optimizer optimizer_make(int kind, REAL rate, REAL beta1, REAL beta2, REAL eps, REAL p1,
                         REAL p2) {
    const optimizer o = {kind, rate, beta1, beta2, eps, p1, p2, 0, 0};
    return optimizer_with_powers(o);
}

// The optimiser at the next step.
optimizer optimizer_next(optimizer o) {
    o.p1 *= o.beta1;
    o.p2 *= o.beta2;
    return optimizer_with_powers(o);
}

// No fused multiply-add: SGD must round exactly as Grenade's descend loop does.
#pragma OPENCL FP_CONTRACT OFF
#define OPTIMIZER_STEP(T, NAME)                                                               \
    void NAME(optimizer o, REAL decay, T g, T *w, T *m, T *v) {                               \
        if (o.kind == OPTIMIZER_SGD) {                                                        \
            *m = o.beta1 * *m - o.rate * g;                                                   \
            *w = *w + *m - o.rate * decay * *w;                                               \
            return;                                                                           \
        }                                                                                     \
        if (o.kind == OPTIMIZER_ADAM) g = g + decay * *w;                                     \
        else *w = *w * (1 - o.rate * decay);                                                  \
        *m = *m + (1 - o.beta1) * (g - *m);                                                   \
        *v = *v * o.beta2 + (1 - o.beta2) * g * g;                                            \
        *w = *w - o.a * *m / (sqrt(*v) + o.e);                                                \
    }
OPTIMIZER_STEP(REAL, optimizer_step)
OPTIMIZER_STEP(REAL8, optimizer_step8)
OPTIMIZER_STEP(realv, optimizer_stepv)
#pragma OPENCL FP_CONTRACT ON

// One step of element i from gradient g (v is neither read nor written under SGD).
void optimizer_at(optimizer o, REAL decay, REAL g, global REAL *w, global REAL *m,
                  global REAL *v, size_t i) {
    REAL wi = w[i], mi = m[i], vi = o.kind == OPTIMIZER_SGD ? 0 : v[i];
    optimizer_step(o, decay, g, &wi, &mi, &vi);
    w[i] = wi;
    m[i] = mi;
    if (o.kind != OPTIMIZER_SGD) v[i] = vi;
}

// The step of weights w[at + own .. at + VW - 1] (m, v: their moments) from lanes own .. of
// their gradient g: one vector step where own is 0, else lane by lane (the same arithmetic);
// none where own >= VW. gemm_outer_update's blocks (gemm.cl), where a weight gradient's update
// runs in its GEMM, once in a loop over the block's vectors. Inlined: as a call (PoCL did not
// inline it), it formed the optimiser for each vector; inlined, the loop forms it once. Inside
// fit's MNIST MLP steps (medians of 175-700 launches, the two versions taking turns) the
// weights' step in the GEMM then took 0.91x the time under SGD and 0.90x under Adam at batch
// 64, 0.91x and 0.79x at 128, 0.89-0.99x and 0.92x at 256.
__attribute__((always_inline)) void optimizer_lanes(int kind, REAL rate, REAL beta1, REAL beta2,
                                                    REAL eps, REAL decay, REAL p1, REAL p2,
                                                    realv g, int own, size_t at,
                                                    global REAL *w, global REAL *m,
                                                    global REAL *v) {
    const optimizer o = optimizer_make(kind, rate, beta1, beta2, eps, p1, p2);
    if (own == 0) {
        realv wi = VLOAD(0, w + at), mi = VLOAD(0, m + at);
        realv vi = kind == OPTIMIZER_SGD ? (realv)0 : VLOAD(0, v + at);
        optimizer_stepv(o, decay, g, &wi, &mi, &vi);
        VSTORE(wi, 0, w + at);
        VSTORE(mi, 0, m + at);
        if (kind != OPTIMIZER_SGD) VSTORE(vi, 0, v + at);
        return;
    }
    REAL lanes[VW];
    VSTORE(g, 0, lanes);
    for (int l = own; l < VW; ++l) optimizer_at(o, decay, lanes[l], w, m, v, at + l);
}

// One step of n parameters, 8 per work-item (global size n / 8 rounded up; a larger one is
// harmless): a kernel per optimiser, so that each holds its rule alone (a run-time choice
// between the rules kept PoCL from vectorising the loop: 1.5-3x slower). Explicit vectors, as a
// bounds check in a kernel of one element per work-item also kept PoCL from vectorising it
// (5-6x slower on AVX2), and STREAMING_EACH over optimizer_at did no better.
#define OPTIMIZER_UPDATE(NAME, KIND)                                                          \
    STREAMING kernel void NAME(int n, REAL rate, REAL beta1, REAL beta2, REAL eps,           \
                               REAL decay, REAL p1, REAL p2, global REAL *w, global REAL *m,  \
                               global REAL *v, global const REAL *g) {                        \
        const int i = 8 * get_global_id(0);                                                   \
        const optimizer o = optimizer_make(KIND, rate, beta1, beta2, eps, p1, p2);            \
        if (i + 8 > n) {                                                                      \
            for (int j = i; j < n; j++) optimizer_at(o, decay, g[j], w, m, v, j);             \
            return;                                                                           \
        }                                                                                     \
        REAL8 wi = vload8(0, w + i), mi = vload8(0, m + i);                                   \
        REAL8 vi = KIND == OPTIMIZER_SGD ? (REAL8)0 : vload8(0, v + i);                       \
        optimizer_step8(o, decay, vload8(0, g + i), &wi, &mi, &vi);                           \
        vstore8(wi, 0, w + i);                                                                \
        vstore8(mi, 0, m + i);                                                                \
        if (KIND != OPTIMIZER_SGD) vstore8(vi, 0, v + i);                                     \
    }
OPTIMIZER_UPDATE(optimizer_update_sgd, OPTIMIZER_SGD)
OPTIMIZER_UPDATE(optimizer_update_adam, OPTIMIZER_ADAM)
OPTIMIZER_UPDATE(optimizer_update_adamw, OPTIMIZER_ADAMW)

// clip_grad_norm_, in two launches: scale[0] = min(1, max_norm / (|g| + 1e-6)), |g| the L2
// norm of n values (one work-group of OPTIMIZER_LANES work-items); then g *= scale[0] in place.
// (A factor read inside the update kernels made them 1.5x slower: it may alias what they write.)
#define OPTIMIZER_LANES 64
kernel void optimizer_clip_scale(int n, REAL max_norm, global const REAL *g,
                                 global REAL *scale) {
    local REAL sums[OPTIMIZER_LANES];
    const int lid = get_local_id(0);
    REAL s = 0;
    for (int i = lid; i < n; i += OPTIMIZER_LANES) s += g[i] * g[i];
    sums[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = OPTIMIZER_LANES / 2; h > 0; h /= 2) {
        if (lid < h) sums[lid] += sums[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) scale[0] = fmin((REAL)1, max_norm / (sqrt(sums[0]) + (REAL)1e-6));
}

STREAMING kernel void optimizer_clip(int n, global const REAL *scale, global REAL *g) {
    STREAMING_EACH(i, n, g[i] *= scale[0])
}
