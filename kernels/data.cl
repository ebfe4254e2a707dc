// Batches from a device-resident dataset: rows order[start .. start + n) of src (rows of
// `width` values) copied into dst (n, width), so a shuffled epoch needs no host transfer.

kernel void gather_rows(int n, int width, int start, global const int *order,
                        global const REAL *src, global REAL *dst) {
    int c = get_global_id(0), r = get_global_id(1);
    if (c >= width || r >= n) return;
    dst[(size_t)r * width + c] = src[(size_t)order[start + r] * width + c];
}

// dst[b, a, k] = src[a, b, k]: the first two axes of an A x B x K array swapped (K = 1: a
// matrix transposed). global size (K, B, A)
kernel void swap_axes(int A, int B, int K, global const REAL *src, global REAL *dst) {
    int k = get_global_id(0), b = get_global_id(1), a = get_global_id(2);
    if (k >= K || b >= B || a >= A) return;
    dst[((size_t)b * A + a) * K + k] = src[((size_t)a * B + b) * K + k];
}
