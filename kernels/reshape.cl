// Pad and Crop over a batch of channel-major planes (n * channels planes of h x w values):
// dst plane (oh x ow) takes src plane (h x w) shifted down by `top` and right by `left`
// (negative: up and left), zeros where nothing lands. Pad is a positive shift into a larger
// plane, Crop a negative one into a smaller; each is the other's backward pass.

// dst's value at (plane p, row i, column j).
REAL shift_at(int p, int i, int j, int h, int w, int top, int left, global const REAL *src) {
    int si = i - top, sj = j - left;
    return si >= 0 && si < h && sj >= 0 && sj < w ? src[((size_t)p * h + si) * w + sj] : 0;
}

// dst's row i of plane p (ow values from dst_row on), as shift_at gives them, for one
// work-item: zeros, then a contiguous copy of the source row, then zeros (loops that vectorise,
// where shift_at's bounds checks per value do not).
void shift_row(int p, int i, int h, int w, int ow, int top, int left, global const REAL *src,
               global REAL *dst_row) {
    const int si = i - top, from = clamp(left, 0, ow), to = clamp(left + w, from, ow);
    const int end = si >= 0 && si < h ? to : from;
    global const REAL *row = src + ((size_t)p * h + si) * w - left;
    for (int j = 0; j < from; ++j) dst_row[j] = 0;
    for (int j = from; j < end; ++j) dst_row[j] = row[j];
    for (int j = end; j < ow; ++j) dst_row[j] = 0;
}

// global size (ow, oh, planes)
kernel void shift_planes(int planes, int h, int w, int oh, int ow, int top, int left,
                         global const REAL *src, global REAL *dst) {
    int j = get_global_id(0), i = get_global_id(1), p = get_global_id(2);
    if (j < ow && i < oh && p < planes)
        dst[((size_t)p * oh + i) * ow + j] = shift_at(p, i, j, h, w, top, left, src);
}
