// Batches from a device-resident dataset: rows order[start .. start + n) of src (rows of
// `width` values) copied into dst (n, width), so a shuffled epoch needs no host transfer.

// One work-item per row, copied a vector at a time (one per element ran 5x slower on PoCL).
// global size (n)
kernel void gather_rows(int n, int width, int start, global const int *order,
                        global const REAL *src, global REAL *dst) {
    const int r = get_global_id(0);
    if (r >= n) return;
    global const REAL *from = src + (size_t)order[start + r] * width;
    global REAL *to = dst + (size_t)r * width;
    int c = 0;
    for (; c + 8 <= width; c += 8) vstore8(vload8(0, from + c), 0, to + c);
    for (; c < width; ++c) to[c] = from[c];
}
