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

REAL logit_forward_at(REAL x) { return 1 / (1 + exp(-x)); }
REAL logit_backward_at(REAL y, REAL dy) { return y * (1 - y) * dy; }

#define ACTIVATION_KERNELS(NAME)                                                              \
    kernel void NAME##_forward(int n, global const REAL *x, global REAL *y) {                \
        int i = get_global_id(0);                                                             \
        if (i < n) y[i] = NAME##_forward_at(x[i]);                                            \
    }                                                                                         \
    kernel void NAME##_backward(int n, global const REAL *tape, global const REAL *dy,       \
                                global REAL *dx) {                                            \
        int i = get_global_id(0);                                                             \
        if (i < n) dx[i] = NAME##_backward_at(tape[i], dy[i]);                                \
    }

ACTIVATION_KERNELS(trivial)
ACTIVATION_KERNELS(tanh)
ACTIVATION_KERNELS(relu)
ACTIVATION_KERNELS(logit)

// Elu (alpha = 1): x for x > 0, exp(x) - 1 below; its tape is the input.
REAL elu_forward_at(REAL x) { return x > 0 ? x : exp(x) - 1; }
REAL elu_backward_at(REAL x, REAL dy) { return x > 0 ? dy : exp(x) * dy; }

ACTIVATION_KERNELS(elu)
