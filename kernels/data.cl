// Batches from a device-resident dataset: rows order[start .. start + n) of src (rows of
// `width` values) copied into dst (n, width), so a shuffled epoch needs no host transfer.

// One work-item per GATHER_RUN values of a row, copied a vector at a time (one per element ran
// 5x slower on PoCL; one work-item per row left a batch of 64 to one core).
#define GATHER_RUN 64
void gather_run(int g, int width, int start, global const int *order, global const REAL *src,
                global REAL *dst) {
    const int runs = (width + GATHER_RUN - 1) / GATHER_RUN;
    const int r = g / runs, c0 = g % runs * GATHER_RUN, end = min(width, c0 + GATHER_RUN);
    global const REAL *from = src + (size_t)order[start + r] * width;
    global REAL *to = dst + (size_t)r * width;
    int c = c0;
    for (; c + 8 <= end; c += 8) vstore8(vload8(0, from + c), 0, to + c);
    for (; c < end; ++c) to[c] = from[c];
}

// The batch's inputs and targets in one launch: rows of x_src (x_width values) into x_dst and
// of t_src into t_dst. global size (n (ceil(x_width / GATHER_RUN) + ceil(t_width / GATHER_RUN)))
kernel void gather_rows(int n, int start, global const int *order, int x_width,
                        global const REAL *x_src, global REAL *x_dst, int t_width,
                        global const REAL *t_src, global REAL *t_dst) {
    const int g = get_global_id(0), x_items = n * ((x_width + GATHER_RUN - 1) / GATHER_RUN);
    if (g < x_items)
        gather_run(g, x_width, start, order, x_src, x_dst);
    else if (g - x_items < n * ((t_width + GATHER_RUN - 1) / GATHER_RUN))
        gather_run(g - x_items, t_width, start, order, t_src, t_dst);
}
