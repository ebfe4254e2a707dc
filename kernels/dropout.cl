// Inverted dropout with a counter-based generator: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", 2011) keyed by the layer's key, counter (element, step), so a
// mask needs no stored state but the step, and the same key and step give the same mask on any
// device. mask = 1 / (1 - rate) where the uniform draw is >= rate, else 0; y = x * mask.

uint4 philox4x32_10(uint4 counter, uint2 key) {
    for (int round = 0; round < 10; ++round) {
        uint hi0 = mul_hi(0xD2511F53u, counter.x), lo0 = 0xD2511F53u * counter.x;
        uint hi1 = mul_hi(0xCD9E8D57u, counter.z), lo1 = 0xCD9E8D57u * counter.z;
        counter = (uint4)(hi1 ^ counter.y ^ key.x, lo1, hi0 ^ counter.w ^ key.y, lo0);
        key += (uint2)(0x9E3779B9u, 0xBB67AE85u);
    }
    return counter;
}

// global size (count): the mask for this step, and y = x * mask. `first_row` is the buffer's
// first row in the whole batch (a shard of a distributed batch starts past 0), so every value
// of a batch draws its own number however the batch is split.
kernel void dropout_forward(int count, uint first_row, uint row_size, REAL rate, REAL scale, uint key_lo,
                            uint key_hi, global const uint *step, global const REAL *x,
                            global REAL *y, global REAL *mask) {
    int i = get_global_id(0);
    if (i >= count) return;
    uint4 bits = philox4x32_10((uint4)(first_row * row_size + i, step[0], 0, 0), (uint2)(key_lo, key_hi));
    REAL keep = (REAL)(bits.x >> 8) * (REAL)(1.0 / 16777216.0) >= rate ? scale : 0;
    mask[i] = keep;
    y[i] = x[i] * keep;
}

// the next step's masks differ: one work-item
kernel void dropout_advance(global uint *step) {
    if (get_global_id(0) == 0) step[0] += 1;
}

STREAMING kernel void dropout_backward(int count, global const REAL *mask,
                                       global const REAL *dy, global REAL *dx) {
    STREAMING_EACH(i, count, dx[i] = dy[i] * mask[i])
}
