// Element-wise activations over a batch flattened to n values. Each one's tape is chosen so its
// derivative is cheap: Relu keeps its input; Tanh and Logit keep their output, since
// tanh' = 1 - y^2 and s' = s (1 - s).

// Trivial (and Reshape, which only renames the shape): the identity both ways.
REAL trivial_forward_at(REAL x) { return x; }
REAL trivial_backward_at(REAL x, REAL dy) { return dy; }

REAL tanh_forward_at(REAL x) { return tanh(x); }
REAL tanh_backward_at(REAL y, REAL dy) { return (1 - y * y) * dy; }

REAL relu_forward_at(REAL x) { return x > 0 ? x : (REAL)0; }
REAL relu_backward_at(REAL x, REAL dy) { return x > 0 ? dy : (REAL)0; }  // slope 0 at x <= 0
// relu_forward_at and relu_backward_at in each lane: a Relu in FullyConnected's GEMMs (the
// forward's gemm_panels, the input delta's gemm_outer).
realv relu_forward_v(realv x) { return select((realv)0, x, isgreater(x, (realv)0)); }
realv relu_backward_v(realv x, realv dy) { return select((realv)0, dy, isgreater(x, (realv)0)); }
// The same over a run of 8 (BatchNorm's kernels, a Relu after it in their launches).
REAL8 relu_forward8(REAL8 x) { return select((REAL8)0, x, isgreater(x, (REAL8)0)); }
REAL8 relu_backward8(REAL8 x, REAL8 dy) { return select((REAL8)0, dy, isgreater(x, (REAL8)0)); }

REAL logit_forward_at(REAL x) { return 1 / (1 + exp(-x)); }
REAL logit_backward_at(REAL y, REAL dy) { return y * (1 - y) * dy; }

#define ACTIVATION_KERNELS(NAME)                                                              \
    STREAMING kernel void NAME##_forward(int n, global const REAL *x, global REAL *y) {      \
        STREAMING_EACH(i, n, y[i] = NAME##_forward_at(x[i]))                                   \
    }                                                                                         \
    STREAMING kernel void NAME##_backward(int n, global const REAL *tape,                    \
                                          global const REAL *dy, global REAL *dx) {           \
        STREAMING_EACH(i, n, dx[i] = NAME##_backward_at(tape[i], dy[i]))                       \
    }

ACTIVATION_KERNELS(trivial)
ACTIVATION_KERNELS(tanh)
ACTIVATION_KERNELS(relu)
ACTIVATION_KERNELS(logit)

// Elu (alpha = 1): x for x > 0, exp(x) - 1 below; its tape is the input.
REAL elu_forward_at(REAL x) { return x > 0 ? x : exp(x) - 1; }
REAL elu_backward_at(REAL x, REAL dy) { return x > 0 ? dy : exp(x) * dy; }

ACTIVATION_KERNELS(elu)

// Sinusoid (Grenade.Layers.Sinusoid): sin x; its tape is the input (sin' = cos).
REAL sinusoid_forward_at(REAL x) { return sin(x); }
REAL sinusoid_backward_at(REAL x, REAL dy) { return cos(x) * dy; }

ACTIVATION_KERNELS(sinusoid)

// Gelu, exact: x Phi(x), Phi the standard normal's distribution (torch.nn.functional.gelu);
// Phi'(x) = exp(-x^2 / 2) / sqrt(2 pi). Its tape is the input.
REAL gelu_forward_at(REAL x) { return (REAL)0.5 * x * (1 + erf(x * (REAL)M_SQRT1_2)); }
REAL gelu_backward_at(REAL x, REAL dy) {
    return ((REAL)0.5 * (1 + erf(x * (REAL)M_SQRT1_2))
            + x * exp((REAL)-0.5 * x * x) * (REAL)(M_2_SQRTPI * M_SQRT1_2 * 0.5)) * dy;
}

ACTIVATION_KERNELS(gelu)

// Gelu, the Grenade fork's fast form: x s(1.702 x), s the logistic function;
// (x s(kx))' = s(kx) + k x s(kx) (1 - s(kx)). Its tape is the input.
REAL gelu_fast_forward_at(REAL x) { return x * logit_forward_at((REAL)1.702 * x); }
REAL gelu_fast_backward_at(REAL x, REAL dy) {
    const REAL s = logit_forward_at((REAL)1.702 * x);
    return (s + (REAL)1.702 * x * s * (1 - s)) * dy;
}

ACTIVATION_KERNELS(gelu_fast)

// Activations with one argument `a`, given to every kernel and fused-loop call.
#define ACTIVATION_KERNELS_WITH_ARGUMENT(NAME)                                                \
    STREAMING kernel void NAME##_forward(int n, REAL a, global const REAL *x,                \
                                         global REAL *y) {                                    \
        STREAMING_EACH(i, n, y[i] = NAME##_forward_at(x[i], a))                                \
    }                                                                                         \
    STREAMING kernel void NAME##_backward(int n, REAL a, global const REAL *tape,            \
                                          global const REAL *dy, global REAL *dx) {           \
        STREAMING_EACH(i, n, dx[i] = NAME##_backward_at(tape[i], dy[i], a))                    \
    }

// LeakyRelu (the Grenade fork's): x, or a x below 0 (slope a there, 1 at 0 and above).
REAL leaky_relu_forward_at(REAL x, REAL a) { return x < 0 ? a * x : x; }
REAL leaky_relu_backward_at(REAL x, REAL dy, REAL a) { return x < 0 ? a * dy : dy; }

ACTIVATION_KERNELS_WITH_ARGUMENT(leaky_relu)

// LeakyTanh (the Grenade fork's clipped identity): x within [-a, a]; beyond, slope 0.05 from
// the edge: a + 0.05 (x - a) above, -a + 0.05 (x + a) below.
REAL leaky_tanh_forward_at(REAL x, REAL a) {
    return x > a ? a + (REAL)0.05 * (x - a) : x < -a ? -a + (REAL)0.05 * (x + a) : x;
}
REAL leaky_tanh_backward_at(REAL x, REAL dy, REAL a) {
    return (x > a || x < -a ? (REAL)0.05 : (REAL)1) * dy;
}

ACTIVATION_KERNELS_WITH_ARGUMENT(leaky_tanh)
