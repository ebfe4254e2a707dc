// Batches from a device-resident dataset: rows order[start .. start + n) of src (rows of
// `width` values) copied into dst (n, width), so a shuffled epoch needs no host transfer.

// One work-item per GATHER_RUN values of a row, copied a vector at a time (one per element ran
// 5x slower on PoCL; one work-item per row left a batch of 64 to one core).
// global size (n ceil(width / GATHER_RUN))
#define GATHER_RUN 64
kernel void gather_rows(int n, int width, int start, global const int *order,
                        global const REAL *src, global REAL *dst) {
    const int runs = (width + GATHER_RUN - 1) / GATHER_RUN, g = get_global_id(0);
    if (g >= n * runs) return;
    const int r = g / runs, c0 = g % runs * GATHER_RUN, end = min(width, c0 + GATHER_RUN);
    global const REAL *from = src + (size_t)order[start + r] * width;
    global REAL *to = dst + (size_t)r * width;
    int c = c0;
    for (; c + 8 <= end; c += 8) vstore8(vload8(0, from + c), 0, to + c);
    for (; c < end; ++c) to[c] = from[c];
}
