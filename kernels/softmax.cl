// Softmax over each row of a batch (n rows of width w), max-subtracted so large logits cannot
// overflow: y = exp(x - max x) / sum exp(x - max x). Tape: the output, since
// dx = y * (dy - sum(dy * y)). With loss "cross_entropy" this backward pass is skipped: the
// runner pushes the fused gradient p - t straight to the logits.

kernel void softmax_forward(int n, int w, global const REAL *x, global REAL *y) {
    int r = get_global_id(0);
    if (r >= n) return;
    global const REAL *xr = x + (size_t)r * w;
    global REAL *yr = y + (size_t)r * w;
    REAL top = xr[0];
    for (int k = 1; k < w; ++k) top = fmax(top, xr[k]);
    REAL sum = 0;
    for (int k = 0; k < w; ++k) sum += (yr[k] = exp(xr[k] - top));
    for (int k = 0; k < w; ++k) yr[k] /= sum;
}

kernel void softmax_backward(int n, int w, global const REAL *y, global const REAL *dy,
                             global REAL *dx) {
    int r = get_global_id(0);
    if (r >= n) return;
    size_t base = (size_t)r * w;
    REAL dot = 0;
    for (int k = 0; k < w; ++k) dot += dy[base + k] * y[base + k];
    for (int k = 0; k < w; ++k) dx[base + k] = y[base + k] * (dy[base + k] - dot);
}
