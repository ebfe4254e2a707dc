// Sums and joins of batches, for Merge and Concat (layers/branches.py).
// A batch of n samples of w values is n rows of w, row-major; concatenating two batches joins
// each sample's values (a's first), which is also a channel concat of channel-major D3 samples.

// y = a + b; y may be a.
STREAMING kernel void add_values(int n, global const REAL *a, global const REAL *b,
                                 global REAL *y) {
    STREAMING_EACH(i, n, y[i] = a[i] + b[i])
}

// Rows of wa + wb values, a row's first wa from a's row r, the rest from b's: y[r] = a[r] ++
// b[r] (concat_rows) and its inverse (split_rows), those values at columns at .. at + wa + wb of
// y's rows of wy (a nested Concat's part of its parent's rows; wb 0: a alone). A work-item per
// run of 8 values of a row (a row's last run shorter), global size n ceil((wa + wb) / 8), in
// work-groups of 1024 (STREAMING); a run within one side is one vector copy. Run q: row
// q / R, from (q % R) 8. (A work-item per value, in work-groups of 64: 1.6-1.7x the time at
// InceptionMini's widest.)
int branches_run(int n, int wa, int wb, int *r, int *count) {
    const int w = wa + wb, runs = (w + 7) / 8, q = get_global_id(0);
    if (q >= n * runs) return -1;
    *r = q / runs;
    const int c0 = q % runs * 8;
    *count = min(8, w - c0);
    return c0;
}

STREAMING kernel void concat_rows(int n, int wa, int wb, int wy, int at, global const REAL *a,
                                  global const REAL *b, global REAL *y) {
    int r, count;
    const int c0 = branches_run(n, wa, wb, &r, &count);
    if (c0 < 0) return;
    global const REAL *ar = a + (size_t)r * wa, *br = b + (size_t)r * wb - wa;
    global REAL *out = y + (size_t)r * wy + at;
    if (count == 8 && (c0 + 8 <= wa || c0 >= wa))
        vstore8(vload8(0, (c0 < wa ? ar : br) + c0), 0, out + c0);
    else
        for (int c = c0; c < c0 + count; ++c) out[c] = c < wa ? ar[c] : br[c];
}

STREAMING kernel void split_rows(int n, int wa, int wb, int wy, int at, global const REAL *y,
                                 global REAL *a, global REAL *b) {
    int r, count;
    const int c0 = branches_run(n, wa, wb, &r, &count);
    if (c0 < 0) return;
    global REAL *ar = a + (size_t)r * wa, *br = b + (size_t)r * wb - wa;
    global const REAL *in = y + (size_t)r * wy + at;
    if (count == 8 && (c0 + 8 <= wa || c0 >= wa)) {
        vstore8(vload8(0, in + c0), 0, (c0 < wa ? ar : br) + c0);
        return;
    }
    for (int c = c0; c < c0 + count; ++c) {
        if (c < wa) ar[c] = in[c];
        else br[c] = in[c];
    }
}
