// Sums and joins of batches, for Merge and Concat (layers/branches.py).
// A batch of n samples of w values is n rows of w, row-major; concatenating two batches joins
// each sample's values (a's first), which is also a channel concat of channel-major D3 samples.

// y = a + b; y may be a.
STREAMING kernel void add_values(int n, global const REAL *a, global const REAL *b,
                                 global REAL *y) {
    STREAMING_EACH(i, n, y[i] = a[i] + b[i])
}

// global size (wa + wb, n): y[r] = a[r] ++ b[r]
kernel void concat_rows(int n, int wa, int wb, global const REAL *a, global const REAL *b,
                        global REAL *y) {
    int c = get_global_id(0), r = get_global_id(1);
    if (c >= wa + wb || r >= n) return;
    y[(size_t)r * (wa + wb) + c] = c < wa ? a[(size_t)r * wa + c] : b[(size_t)r * wb + c - wa];
}

// global size (wa + wb, n): the inverse of concat_rows.
kernel void split_rows(int n, int wa, int wb, global const REAL *y, global REAL *a,
                       global REAL *b) {
    int c = get_global_id(0), r = get_global_id(1);
    if (c >= wa + wb || r >= n) return;
    REAL v = y[(size_t)r * (wa + wb) + c];
    if (c < wa) a[(size_t)r * wa + c] = v;
    else b[(size_t)r * wb + c - wa] = v;
}
