// Pad and Crop over a batch of channel-major planes (n * channels planes of h x w values):
// dst plane (oh x ow) takes src plane (h x w) shifted down by `top` and right by `left`
// (negative: up and left), zeros where nothing lands. Pad is a positive shift into a larger
// plane, Crop a negative one into a smaller; each is the other's backward pass.

// dst's row i of plane p (ow values from dst_row on), for one work-item: zeros, then a
// contiguous copy of the source row (row i - top, columns from -left on), then zeros: loops
// that vectorise, where bounds checks on every value did not (the kernel ran 1.4-2.8x slower
// with a work-item per value).
void shift_row(int p, int i, int h, int w, int ow, int top, int left, global const REAL *src,
               global REAL *dst_row) {
    const int si = i - top, from = clamp(left, 0, ow), to = clamp(left + w, from, ow);
    const int end = si >= 0 && si < h ? to : from;
    global const REAL *row = src + ((size_t)p * h + si) * w - left;
    for (int j = 0; j < from; ++j) dst_row[j] = 0;
    for (int j = from; j < end; ++j) dst_row[j] = row[j];
    for (int j = end; j < ow; ++j) dst_row[j] = 0;
}

// A work-item per destination row, global size (planes oh): row q is plane q / oh's row q % oh.
// Source plane p lies at src0 + (p / per) stride + (p % per) h w: planes one after another
// (per 1, stride h w), or `per` planes of each sample's row of `stride` values (a Concat's rows).
// (Over (oh, planes) in work-groups of (64, 1), each half or more empty at oh 12..32: up to
// 2x the time at InceptionMini's Pads and Crops, though about the same at others.)
kernel void shift_planes(int planes, int h, int w, int oh, int ow, int top, int left,
                         global const REAL *src, int src0, int per, int stride,
                         global REAL *dst) {
    const int q = get_global_id(0), p = q / oh;
    if (q < planes * oh)
        shift_row(0, q % oh, h, w, ow, top, left,
                  src + src0 + (size_t)(p / per) * stride + (size_t)(p % per) * h * w,
                  dst + (size_t)q * ow);
}
