// The gradient pushed back from the output, over a batch flattened to n values.
// Grenade's default: output - target, scaled by 1 / batch so a batch step averages its gradients.

REAL loss_output_minus_target_at(REAL y, REAL t, REAL scale) { return (y - t) * scale; }

kernel void loss_output_minus_target(int n, REAL scale, global const REAL *y,
                                     global const REAL *t, global REAL *dy) {
    int i = get_global_id(0);
    if (i < n) dy[i] = loss_output_minus_target_at(y[i], t[i], scale);
}
