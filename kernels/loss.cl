// The gradient a loss pushes back: y - target (Grenade's error at the output; p - t at the
// logits for cross entropy), times `scale` (1 / batch: a step averages its rows' gradients).
// With `masked`, rows whose mask is 0 (sequence steps without a target) push back 0.
REAL loss_gradient_at(REAL y, REAL t, REAL scale) { return (y - t) * scale; }

// global size (rows * width)
kernel void loss_gradient(int rows, int width, REAL scale, int masked, global const REAL *y,
                          global const REAL *t, global const REAL *mask, global REAL *dy) {
    const int at = get_global_id(0);
    if (at >= rows * width) return;
    dy[at] = masked && mask[at / width] == 0 ? (REAL)0 : loss_gradient_at(y[at], t[at], scale);
}

// One row's loss (see loss_metrics) from its output y, logits and target t (w values each).
REAL loss_row_at(int w, int cross_entropy, global const REAL *y, global const REAL *logits,
                 global const REAL *t) {
    REAL value = 0;
    if (cross_entropy) {
        REAL top = logits[0];
        for (int k = 1; k < w; ++k) top = fmax(top, logits[k]);
        REAL sum = 0;
        for (int k = 0; k < w; ++k) sum += exp(logits[k] - top);
        REAL lse = log(sum);
        for (int k = 0; k < w; ++k) value += t[k] * (lse - (logits[k] - top));
    } else {
        for (int k = 0; k < w; ++k) {
            REAL e = y[k] - t[k];
            value += e * e;
        }
        value *= (REAL)0.5;
    }
    return value;
}

// Whether a row is correct (see loss_metrics): 1 or 0.
REAL correct_row_at(int w, global const REAL *y, global const REAL *t) {
    if (w == 1) return (y[0] > (REAL)0.5) == (t[0] > (REAL)0.5);
    int best_y = 0, best_t = 0;
    for (int k = 1; k < w; ++k) {
        if (y[k] > y[best_y]) best_y = k;
        if (t[k] > t[best_t]) best_t = k;
    }
    return best_y == best_t;
}

// Per-row loss and correctness (n rows of width w), the one definition each loss reports in
// training, validation and sequences alike:
//   squared error: 0.5 sum (y - t)^2;  cross entropy: -sum t log softmax(logits), computed from
//   the logits as t . (log sum exp(logits - max) - (logits - max)), finite for any logits.
// A row is correct when argmax y == argmax t (width 1: both on the same side of 0.5). With
// `masked`, rows whose mask is 0 (sequence steps without a target) count nothing. One
// work-group of LOSS_LANES work-items: lane l sums rows l, l + LOSS_LANES, ... in order, then
// lane 0 adds the lanes' sums in order to acc[0] (loss), acc[1] (correct rows), acc[2]
// (rows counted).
#define LOSS_LANES 64
kernel void loss_metrics(int n, int w, int cross_entropy, int masked, global const REAL *y,
                         global const REAL *logits, global const REAL *t,
                         global const REAL *mask, global REAL *acc) {
    local REAL sums[3][LOSS_LANES];
    const int lid = get_local_id(0);
    REAL l = 0, c = 0, k = 0;
    for (int r = lid; r < n; r += LOSS_LANES) {
        if (masked && mask[r] == 0) continue;
        const size_t base = (size_t)r * w;
        l += loss_row_at(w, cross_entropy, y + base, logits + base, t + base);
        c += correct_row_at(w, y + base, t + base);
        k += 1;
    }
    sums[0][lid] = l;
    sums[1][lid] = c;
    sums[2][lid] = k;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid != 0) return;
    for (int j = 0; j < 3; ++j) {
        REAL total = 0;
        for (int i = 0; i < LOSS_LANES; ++i) total += sums[j][i];
        acc[j] += total;
    }
}
