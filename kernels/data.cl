// Batches from a device-resident dataset: rows order[start .. start + n) of src (rows of
// `width` values) copied into dst (n, width), so a shuffled epoch needs no host transfer.

kernel void gather_rows(int n, int width, int start, global const int *order,
                        global const REAL *src, global REAL *dst) {
    int c = get_global_id(0), r = get_global_id(1);
    if (c >= width || r >= n) return;
    dst[(size_t)r * width + c] = src[(size_t)order[start + r] * width + c];
}

