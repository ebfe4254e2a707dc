// Softmax over each row of a batch (n rows of width w), max-subtracted so large logits cannot
// overflow: y = exp(x - max x) / sum exp(x - max x). Tape: the output, since
// dx = y * (dy - sum(dy * y)). With loss "cross_entropy" this backward pass is skipped: the
// runner pushes the fused gradient p - t straight to the logits.

// One row of w values each: the forward pass, and the backward pass from the output's delta.
void softmax_forward_row(global const REAL *xr, global REAL *yr, int w) {
    REAL top = xr[0];
    for (int k = 1; k < w; ++k) top = fmax(top, xr[k]);
    REAL sum = 0;
    for (int k = 0; k < w; ++k) sum += (yr[k] = exp(xr[k] - top));
    for (int k = 0; k < w; ++k) yr[k] /= sum;
}

void softmax_backward_row(global const REAL *yr, global const REAL *dyr, global REAL *dxr,
                          int w) {
    REAL dot = 0;
    for (int k = 0; k < w; ++k) dot += dyr[k] * yr[k];
    for (int k = 0; k < w; ++k) dxr[k] = yr[k] * (dyr[k] - dot);
}

kernel void softmax_forward(int n, int w, global const REAL *x, global REAL *y) {
    int r = get_global_id(0);
    if (r < n) softmax_forward_row(x + (size_t)r * w, y + (size_t)r * w, w);
}

kernel void softmax_backward(int n, int w, global const REAL *y, global const REAL *dy,
                             global REAL *dx) {
    int r = get_global_id(0);
    const size_t at = (size_t)r * w;
    if (r < n) softmax_backward_row(y + at, dy + at, dx + at, w);
}
