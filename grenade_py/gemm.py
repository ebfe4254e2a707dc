"""Launches of the GEMM kernels with their global sizes, in the device's form (`Device.gemm`):
register-blocked for CPUs (kernels/gemm.cl) or local-memory tiled for GPUs (kernels/gemm_tiled.cl).

The register blocks (RM x RN outputs per work-item for gemm_dot, RM rows x CV vectors of VW lanes
for gemm_outer) and the tiled kernels' tile shapes are the ones tuned for the launch's shape on
the device (grenade_py/blocks.py), else the default.
"""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py import blocks
from grenade_py.device import Device, Launch
from grenade_py.errors import DeviceError
from grenade_py.optimizers import VALUES, value_slots


def vector_width(device: Device) -> int:
    """Lanes of one 512-bit vector in the device's precision (VW in gemm.cl)."""
    return 16 if device.dtype == np.float32 else 8


def rows_product(rows: int, a: str, a_row: int, a_step: int, k: int, b: str, p: int, out: str,
                 out_row: int) -> str:
    """The fused loop's statement for `rows` rows of a one-example product (gemm_rows_product,
    four rows per lane): out_t = a_t B for t < rows, a_t = a + t a_row (entries a_step apart, k
    of them), B (k, p), out_t = out + t out_row; then a barrier. a, b and out: C expressions."""
    return (f"for (int q = lid; q < {_blocks(rows, 4)}; q += nl) gemm_rows_product({a} + "
            f"(size_t)q * {4 * a_row}, {a_row}, {a_step}, {k}, {b}, {p}, {out} + (size_t)q * "
            f"{4 * out_row}, {out_row}, min(4, {rows} - 4 * q));\nbarrier(CLK_GLOBAL_MEM_FENCE);\n")


def _blocks(size: int, block: int) -> int:
    return -(-size // block)


def _tiled(device: Device, form: str, shape: tuple[int, ...], batches: int,
           *args: object) -> Launch:
    """A tiled GEMM's launch (m, n first of `shape`) at the tile shape chosen for `shape`, or
    at the smallest where the chosen shape's kernel runs fewer work-items on this device than
    its work-group has (a GPU may limit a kernel of many registers below the device's limit)."""
    m, n = shape[:2]

    def build(tile: tuple[int, ...]) -> Launch:
        local = blocks.local(form, tile)
        return device.launch(blocks.kernel_name(form, tile), (
            _blocks(n, tile[1]) * local[0], _blocks(m, tile[0]) * local[1], batches), m, n,
            *args, local=local)

    try:
        return blocks.launch(device, form, shape, build)
    except DeviceError:
        return build(blocks.SMALLEST_TILE)


def gemm_dot(device: Device, m: int, n: int, k: int, a: cl_array.Array, b: cl_array.Array,
             bias: cl_array.Array, c: cl_array.Array, batches: int = 1,
             a_m: int | None = None, a_batch: int = 0, b_n: int | None = None,
             b_batch: int = 0, chunks: int = 1, relu: cl_array.Array | None = None) -> Launch:
    """C (m, n) = A (m, k) B(n, k)^T + bias (n,); over `batches` (a convolution's samples), the
    sum of the products of A + s a_batch and B + s b_batch, rows a_m and b_n apart (default
    k: contiguous). With `chunks`, the batch in chunks of ceil(batches / chunks) entries, chunk
    i's sum (plus the bias in the first only) into C + i m n, for gemm_sum_chunks to add up:
    more work-items where m n alone are too few for a GPU. With `relu` (m, n) (register-blocked
    form, one chunk), relu(C) too: a Relu's output after FullyConnected's."""
    per = -(-batches // max(1, min(chunks, batches)))
    assert relu is None or device.gemm == "registers" and per == batches
    args = (k, a, k if a_m is None else a_m, a_batch, b, k if b_n is None else b_n, b_batch,
            batches, per, bias, c)
    if device.gemm == "tiled":
        depth = -(-batches // per)
        return _tiled(device, "gemm_dot_tiled", (m, n, k, batches, depth), depth, *args)
    return blocks.launch(device, "gemm_dot", (m, n, k, batches), lambda block: device.launch(
        blocks.kernel_name("gemm_dot", block),
        (_blocks(n, block[1]), _blocks(m, block[0]), -(-batches // per)), m, n, *args, relu,
        local=(*blocks.local("gemm_dot", block), 1)))


#: On a GPU, a gemm_dot of one product whose 64 x 64 tiles are fewer than the device's compute
#: units sums k in parts of at least SPLIT_DEPTH apart (`k_splits`), then adds them up in order.
#: On an NVIDIA H200 MNIST's forward at 64 x 512 x 784 (8 tiles, 49 steps of k a tile) took
#: 86 us in one part at any tile shape and 19-26 us in 16 (.ci/gpu-gemm-variants). A product
#: whose 64 x 64 tiles fill the units but whose BIG_TILE tiles do not sums k in parts of those:
#: there 1024^3 (64 such tiles for 132 units) ran at 15.1 TFLOP/s in one part of 64 x 64 tiles,
#: 19.8-20.9 in 4 parts of 128 x 128, 16.3 in 2 and 18.4-18.9 in 8.
SPLIT_DEPTH = 32


def k_splits(device: Device, m: int, n: int, k: int) -> int:
    """The parts that C (m, n) = A (m, k) B (n, k)^T sums k in on `device` (FullyConnected's
    forward: `gemm_forward`'s splits): 1 on CPUs and in the register-blocked form; on a GPU in
    the tiled form the fewest that divide k into parts of at least SPLIT_DEPTH and give each of
    its compute units a 64 x 64 tile (else the most that do so divide it), or where those tiles
    are enough but BIG_TILE's (`blocks.big_tiles`) are not, one of those (the tile
    `blocks.default` then takes)."""
    if not device.gpu or device.gemm != "tiled":
        return 1
    units = device.cl_device.max_compute_units
    tiles = _blocks(m, blocks.TILES[0][0]) * _blocks(n, blocks.TILES[0][1])
    if tiles >= units:
        tiles = blocks.big_tiles(device, (m, n))
        if not tiles or tiles >= units:
            return 1
    parts = [s for s in range(1, k // SPLIT_DEPTH + 1) if k % s == 0] or [1]
    return next((s for s in parts if tiles * s >= units), parts[-1])


#: FullyConnected's forward on at least PANEL_ROWS rows and blocks.WIDE outputs runs from
#: panels of W (`panel_size`) on CPUs of 16-float vectors: packing W costs about a copy of its
#: n x k values, whatever the rows, and the product then runs faster per row; a panel of
#: fewer outputs is mostly padding. MNIST's MLP epochs on a 2-core AVX-512 Xeon, taking turns
#: (7 each, medians), from panels over gemm_dot: 0.94x, 0.94x and 0.98x at batch 256, 0.97x at
#: 192, 1.09x at 128 (see FullyConnected.forward for the products alone).
PANEL_ROWS = 256


def _panels_run(device: Device) -> bool:
    """Whether products run from panels on `device` where their shapes ask: the
    register-blocked form on CPUs of 16-float vectors (where they were measured)."""
    return device.gemm == "registers" and not device.gpu and not device.narrow


def panel_size(device: Device, m: int, n: int, k: int) -> int:
    """The values of the panels (`gemm_pack_panels`) that C (m, n) = A (m, k) B (n, k)^T runs
    from on `device` (B's n rows rounded up to whole panels of 4 VW, times k), or 0 where it
    runs as gemm_dot: fewer than PANEL_ROWS rows or blocks.WIDE outputs, CPUs of narrower
    vectors, GPUs."""
    if not _panels_run(device) or m < PANEL_ROWS or n < blocks.WIDE:
        return 0
    panel = 4 * vector_width(device)
    return _blocks(n, panel) * panel * k


def gemm_forward(device: Device, m: int, n: int, k: int, a: cl_array.Array,
                 b: cl_array.Array, bias: cl_array.Array, c: cl_array.Array, splits: int = 1,
                 parts: cl_array.Array | None = None, relu: cl_array.Array | None = None,
                 panels: cl_array.Array | None = None) -> list[Launch]:
    """C (m, n) = A (m, k) B (n, k)^T + bias (n,) as FullyConnected's forward runs it: one
    gemm_dot; with `panels` (`panel_size` values), B packed into them, then gemm_panels; or
    with `splits` (from `k_splits`, which divides k) k in that many parts, summed into `parts`
    (splits x m x n values) and added up in order by gemm_sum_chunks. `relu`: relu(C) too (in
    one part)."""
    if panels is not None:
        panel = 4 * vector_width(device)
        assert splits == 1 and panels.size >= _blocks(n, panel) * panel * k
        return [device.launch("gemm_pack_panels", (panel, _blocks(k, panel // 4),
                                                    _blocks(n, panel)), n, k, b, k, panels),
                blocks.launch(device, "gemm_panels", (m, n, k), lambda block: device.launch(
                    blocks.kernel_name("gemm_panels", block),
                    (_blocks(n, panel) * 4 // block[1], _blocks(m, block[0])), m, n, k, a, k,
                    panels, bias, c, relu, local=blocks.local("gemm_panels", block)))]
    if splits == 1:
        return [gemm_dot(device, m, n, k, a, b, bias, c, relu=relu)]
    if parts is None or parts.size < splits * m * n or k % splits:
        raise ValueError(f"k = {k} in {splits} parts needs k a multiple of them and a buffer "
                         f"of {splits * m * n} values for their sums")
    part = k // splits
    return [gemm_dot(device, m, n, part, a, b, bias, parts, batches=splits, a_m=k,
                     a_batch=part, b_n=k, b_batch=part, chunks=splits),
            device.launch("gemm_sum_chunks", (m * n,), m * n, splits, parts, c)]


def gemm_transpose_sums(device: Device, k: int, n: int, a: cl_array.Array,
                        at: cl_array.Array, c: cl_array.Array) -> Launch:
    """C (n,) = sum over rows of A (k, n), and At (n, k) = A transposed; in groups of 8
    work-items (of 8 columns each: the default 64 put a layer of 512 outputs on one core)."""
    return device.launch("gemm_transpose_sums", (_blocks(n, 8),), k, n, a, at, c, local=(8,))


def gemm_outer(device: Device, m: int, n: int, k: int, a: cl_array.Array, a_m: int, a_k: int,
               b: cl_array.Array, c: cl_array.Array, batches: int = 1, b_k: int | None = None,
               b_batch: int = 0, c_m: int | None = None, c_batch: int = 0,
               relu: cl_array.Array | None = None) -> Launch:
    """C (m, n) = sum over k of A[i * a_m + k * a_k] B (k, n): A is read through strides, so
    either operand of a transposed product fits. Over `batches`, one product per entry s, of
    B + s b_batch into C + s c_batch, B's rows b_k apart and C's c_m (default n: contiguous).
    With `relu` (register-blocked form), the input of a Relu laid out as C: C is then its
    input delta, relu_backward_at(relu, A B)."""
    args = (k, a, a_m, a_k, b, n if b_k is None else b_k, b_batch, c, n if c_m is None else c_m,
            c_batch)
    shape = (m, n, k, batches, int(a_k == 1))
    assert relu is None or device.gemm == "registers"
    if device.gemm == "tiled":
        return _tiled(device, "gemm_outer_tiled", shape, batches, *args)
    return blocks.launch(device, "gemm_outer", shape, lambda block: device.launch(
        blocks.kernel_name("gemm_outer", block),
        (_blocks(n, block[1] * vector_width(device)), _blocks(m, block[0]), batches), m, n,
        *args, relu, local=blocks.local("gemm_outer", block)))


#: gemm_outer's B (k, n) of at least OUTER_PANEL_BYTES, n a multiple of a panel's 4 VW
#: columns, on at least OUTER_PANEL_ROWS rows of A, runs from B's column strips copied into
#: panels (`outer_panel_size`, `gemm_outer_panels`) on CPUs of 16-float vectors: read in place,
#: each block's strip of B spans k rows n apart, which beyond L2's size ran at half the rate.
#: On a 2-core AVX-512 Xeon, taking turns (medians of 5), the copy counted, from panels over in
#: place: m x n x k 256 x 1024 x 1024 0.52x the time (213 GFLOP/s against 110), 1024 x 1024 x
#: 1024 0.47x, 32 x 1024 x 1024 0.75x, 256 x 2048 x 2048 0.45x, 256 x 512 x 1024 0.60x, 256 x
#: 640 x 1024 0.77x, 256 x 1024 x 384 0.77x; B of 1 MiB: 256 x 1024 x 256 0.96x, 256 x 512 x 512
#: 1.00x, 64 x 512 x 512 1.33x, 256 x 256 x 1024 1.00x.
OUTER_PANEL_BYTES, OUTER_PANEL_ROWS = 3 << 19, 32


def outer_panel_size(device: Device, m: int, n: int, k: int) -> int:
    """The values of the panels that C (m, n) = A B (k, n) runs from on `device`
    (`gemm_outer_panels`), or 0 where it runs as one gemm_outer: B under OUTER_PANEL_BYTES, n
    not whole panels, fewer than OUTER_PANEL_ROWS rows, CPUs of narrower vectors, GPUs."""
    if not _panels_run(device) or m < OUTER_PANEL_ROWS or n % (4 * vector_width(device)) or \
            k * n * np.dtype(device.dtype).itemsize < OUTER_PANEL_BYTES:
        return 0
    return k * n


def gemm_outer_panels(device: Device, m: int, n: int, k: int, a: cl_array.Array, a_m: int,
                      a_k: int, b: cl_array.Array, b_k: int, c: cl_array.Array,
                      panels: cl_array.Array, relu: cl_array.Array | None = None
                      ) -> list[Launch]:
    """gemm_outer's C (m, n) = A B (k, n), B's rows b_k apart, from B's strips of 4 VW
    columns copied into `panels` (`outer_panel_size` values; gemm_copy_panels), then gemm_outer
    over the batch of panels, each into its columns of C: gemm_outer's sums, the same bits.
    `relu`: as gemm_outer's."""
    panel = 4 * vector_width(device)
    assert n % panel == 0 and panels.size >= k * n
    return [device.launch("gemm_copy_panels", (k, n // panel), k, b, b_k, panels,
                          local=(16, 1)),
            gemm_outer(device, m, panel, k, a, a_m, a_k, panels, c, batches=n // panel,
                       b_k=panel, b_batch=k * panel, c_m=n, c_batch=panel, relu=relu)]


def gemm_outer_update(device: Device, m: int, n: int, k: int, a: cl_array.Array, a_m: int,
                      a_k: int, b: cl_array.Array, weights: cl_array.Array,
                      momentum: cl_array.Array, second: cl_array.Array) -> Launch:
    """The optimiser's step on `weights` (m, n), n >= VW (`vector_width`), from their gradient
    A B (as gemm_outer's C: A read through strides, B (k, n)), in one launch: the gradient is
    never stored (register-blocked form). The optimiser's kind and VALUES are per-call
    arguments ("kind" and `optimizers.value_slots(9)`), zero until set: a step of SGD at rate 0
    and momentum 0, which zeroes the momentum and leaves the weights as they are."""
    assert device.gemm == "registers" and n >= vector_width(device)
    zeros = [device.dtype(0)] * len(VALUES)
    return blocks.launch(device, "gemm_outer_update", (m, n, k), lambda block: device.launch(
        blocks.kernel_name("gemm_outer_update", block),
        (_blocks(n, block[1] * vector_width(device)), _blocks(m, block[0])), m, n, k, a, a_m,
        a_k, b, n, 0, *zeros, weights, momentum, second,
        local=blocks.local("gemm_outer_update", block),
        per_call={"kind": 8} | value_slots(9)))
