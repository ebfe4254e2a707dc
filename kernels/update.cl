// Grenade's momentum + L2 descent, element-wise over n parameters (weights or biases):
// m' = momentum m - rate g;  w' = w + m' - (rate l2) w.

void sgd_momentum_l2_at(global REAL *w, global REAL *m, REAL g, REAL rate, REAL momentum,
                        REAL l2, size_t i) {
    // No fused multiply-add: the result must round exactly as Grenade's descend loop does.
    #pragma OPENCL FP_CONTRACT OFF
    REAL m2 = momentum * m[i] - rate * g;
    m[i] = m2;
    w[i] = w[i] + m2 - rate * l2 * w[i];
}

kernel void sgd_momentum_l2(int n, REAL rate, REAL momentum, REAL l2, global REAL *w,
                            global REAL *m, global const REAL *g) {
    int i = get_global_id(0);
    if (i < n) sgd_momentum_l2_at(w, m, g[i], rate, momentum, l2, i);
}
