"""Convolution: Grenade's cross-correlation of channel-major planes, no bias. Ports
Grenade.Layers.Convolution.

Shape: D2 rows cols (one channel) or D3 rows cols channels -> D3 out_rows out_cols filters (D2
when the input is D2 and there is one filter), "valid, exact fit" as in Grenade:
(out_rows - 1) * stride_rows = rows - kernel_rows, and the same for columns; sizes that do not
tile the input exactly are a ShapeError when the network is built.
Parameters: `kernel` K, (kernel_rows * kernel_cols * channels, filters): row c*kh*kw + a*kw + b
multiplies input x[c, i*sh + a, j*sw + b] — Grenade's K, so its model files map onto ours.
Tape: the input, and its patches where they are copied out. Kernels (kernels/convolution.cl):
conv_forward (y_s = K^T patches_s) and conv_kernel_gradient (dK = sum_s patches_s dy_s^T), GEMMs
that gather x's patches (R = kh*kw*channels patch entries by positions) as they read them, at
stride 1 along output rows of 8 or more columns (runs of 8; the last run of a row moved back onto
its end where the row is not a multiple of 8, dK then reading dy laid out in the same runs,
conv_dy_runs); other shapes copy the patches out (conv_im2col) for FullyConnected's GEMMs, a gather
of single values costing more than the copy (output planes of fewer positions than a vector: entry
by entry over the whole batch, so that the forward pass, dK and the stride-1 input delta are each
one product over every sample's positions, see `short_planes`). Those shapes' forward pass and
kernel gradient, on CPUs, of 8 filters or more (4 in float64), copy nothing: conv_forward_planes
and conv_kernel_gradient_planes hold vectors of filters (K's rows, dy laid out positions-major) and
broadcast x's values (`planes`); so do those of the implicit GEMMs whose rows are not whole runs of
8, from 64 patch entries and 16 filters (8 in float64). The input delta's patches_s = K dy_s into a
per-batch buffer, put back onto dx by a gather (overlaps add up without atomics): at stride 1 on
CPUs both in one launch, conv_input_delta (a work-group per sample), or where the GEMMs are implicit
conv_scatter_delta (each patch entry's sums added onto dx as they are made, a work-item per sample
and 2 or 3 input channels; from dy on the grid of runs where rows are not whole runs of 8: from
SCATTER_ROWS outputs), else gemm_outer and conv_col2im (a row's phase of columns, 8 at a time).
Where those rows have FLIP_CHANNELS input channels or more, the input delta is instead the forward
pass of the turned convolution, K turned over dy padded all round (`flips`). y and dy stay
(batch, F, positions). On GPUs the kernel gradient (either form) sums chunks of the
batch apart and adds them up in order (`kernel_chunks`, gemm_sum_chunks): its R x F outputs alone
are too few work-items there.
In the fused per-example loop: direct loops over one sample, in blocks of 2 filters x 4 rows
x 8 columns where rows have 8 or more outputs, 4 or more rows (conv_direct_block; the kernel
gradient, any number of rows, conv_direct_kernel_block; the input delta, at stride 1, either
conv_input_delta's sums, the patches K dy four rows at a time (gemm_rows_product) then the col2im
rows, or conv_direct_delta_block over the padded delta (see _fused_patches), after a Pad only
its interior's rows or blocks), else column by column (conv_direct_row,
conv_direct_delta_plane, conv_direct_kernel_grads): the same products as the GEMMs, summed in
another order where the forms differ (equal to rounding).
Initialisation: "scaled", uniform +-1/sqrt(kh*kw*channels); "grenade", uniform +-1.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py import blocks
from grenade_py.device import Launch, rows
from grenade_py.errors import ShapeError
from grenade_py.gemm import gemm_dot, gemm_outer, rows_product, vector_width
from grenade_py.layers.arguments import chosen_init, initial_values, positive_ints
from grenade_py.layers.base import Buffers, Layer
from grenade_py.layers.pad import Pad, fused_shift
from grenade_py.shapes import D2, D3, Shape

#: Input channels per work-item of the stride-1 col2im (COL2IM_CHANNELS in convolution.cl).
COL2IM_CHANNELS = 4
#: The patch entries (C kh kw) from which the implicit GEMMs over rows that are not whole runs
#: of 8 are the planes forms instead (`Convolution.planes`).
PLANES_ENTRIES = 64
#: The output rows, not whole runs of 8, from which the implicit GEMMs' input delta is
#: conv_scatter_delta from dy laid out on the grid (`Convolution.scatters`). On a 2-core AVX2
#: EPYC (PoCL 3.1), against conv_input_delta, the scatter alone (the kernel gradient lays dy
#: out): at rows of 9 to 13 1.04-1.39x its time (11 shapes, both precisions); at 14 0.73-1.18x
#: in float32 (4), 0.52-0.61x in float64 (2); at 17 to 33 0.60-1.04x (9), 0.49x in float64.
SCATTER_ROWS = 14
#: The input channels from which the input delta over rows that are not whole runs of 8 is
#: the turned convolution's forward pass (`Convolution.flips`).
FLIP_CHANNELS = 6
#: On a GPU the kernel gradient splits the batch into chunks until its R x F outputs
#: times the chunks reach this many (see `kernel_chunks`).
SPLIT_OUTPUTS = 1 << 16


def planes(shape: Shape) -> tuple[int, int, int]:
    """(channels, rows, cols) of a D2 (one channel) or D3 shape; ShapeError for D1."""
    if isinstance(shape, D3):
        return shape.channels, shape.rows, shape.cols
    if isinstance(shape, D2):
        return 1, shape.rows, shape.cols
    raise ShapeError("takes D2 or D3")


def windows(size: int, kernel: int, stride: int, what: str) -> int:
    """How many windows of `kernel` every `stride` tile `size` exactly (Grenade's exact fit)."""
    if size < kernel or (size - kernel) % stride:
        raise ShapeError(f"needs (out - 1) * {stride} = {what} - {kernel} for its "
                         f"{kernel}-wide windows every {stride}, and {what} = {size} gives none")
    return (size - kernel) // stride + 1


class Convolution(Layer):
    """Cross-correlation with `filters` kernels of kernel_rows x kernel_cols x channels;
    `init` draws the kernel as that one of INITS says instead of as the network's `init`."""

    def __init__(self, channels: int, filters: int, kernel_rows: int, kernel_cols: int,
                 stride_rows: int, stride_cols: int, init: str | None = None) -> None:
        super().__init__()
        self.init = chosen_init(type(self).__name__, init)
        positive_ints(type(self).__name__, channels=channels, filters=filters,
                      kernel_rows=kernel_rows, kernel_cols=kernel_cols, stride_rows=stride_rows,
                      stride_cols=stride_cols)
        self.channels, self.filters = int(channels), int(filters)
        self.kh, self.kw, self.sh, self.sw = (int(v) for v in (kernel_rows, kernel_cols,
                                                              stride_rows, stride_cols))

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "channels": self.channels, "filters": self.filters,
                "kernel_rows": self.kh, "kernel_cols": self.kw, "stride_rows": self.sh,
                "stride_cols": self.sw} | ({} if self.init is None else {"init": self.init})

    def __repr__(self) -> str:
        return (f"{type(self).__name__} {self.channels} {self.filters} {self.kh} {self.kw} "
                f"{self.sh} {self.sw}")

    def out_shape(self, in_shape: Shape) -> Shape:
        channels, rows, cols = planes(in_shape)
        if channels != self.channels:
            raise ShapeError(f"takes {self.channels} channels")
        out_rows, out_cols = self.out_planes(rows, cols)
        if isinstance(in_shape, D2) and self.filters == 1:
            return D2(out_rows, out_cols)
        return D3(out_rows, out_cols, self.filters)

    def out_planes(self, rows: int, cols: int) -> tuple[int, int]:
        """The output planes' rows and cols for input planes of rows x cols."""
        return windows(rows, self.kh, self.sh, "rows"), windows(cols, self.kw, self.sw, "cols")

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"kernel": (self.kh * self.kw * self.channels, self.filters)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        rows = self.kh * self.kw * self.channels
        return {"kernel": initial_values(rng, init, (rows, self.filters), rows,
                                         self.kh * self.kw * self.filters)}

    def geometry(self) -> list[int]:
        """The convolution's shape arguments: C, H, W, F, kh, kw, sh, sw, OH, OW."""
        channels, rows, cols = planes(self.in_shape)
        _, out_rows, out_cols = planes(self.out_shape(self.in_shape))
        return [channels, rows, cols, self.filters, self.kh, self.kw, self.sh, self.sw,
                out_rows, out_cols]

    def implicit(self) -> bool:
        """Whether the forward pass and the kernel gradient gather the patches as they read
        them (stride 1 along rows of at least 8 outputs: runs of 8 inputs, the last of a row
        moved back onto its end; see conv_runs in kernels/convolution.cl); else they read them
        from an im2col copy."""
        return self.sw == 1 and self.geometry()[9] >= 8

    def short_planes(self) -> bool:
        """Whether the patches are copied out entry-major, (R, n, positions), and the GEMMs
        are each one product over the whole batch: the forward pass K^T patches (R, n P) into
        y filter-major (F, n P), laid out back (conv_swap_planes); the kernel gradient
        patches (R, n P) . dy (F, n P)^T, dy laid out filter-major first; at stride 1 the
        input delta K dy into the patches: an output plane of fewer positions than one of the
        GEMMs' vectors (VW), whose products sample by sample would have a few terms or columns
        each (the register-blocked GEMMs; GPUs take the chunks of `kernel_chunks`). On CPUs of
        8-float vectors too: there, at 3 x 3 planes of 16 to 128 filters (float32), the input
        delta took 0.20-0.64x conv_input_delta's time (4 shapes), and networks whose second
        convolution gave such planes trained in 0.64-0.86x the time (3); at 4 x 4 and 5 x 5
        planes it took 1.0-1.54x (6 shapes), which the rule leaves out."""
        *_, oh, ow = self.geometry()
        return not self.implicit() and self.device.gemm == "registers" and \
            oh * ow < vector_width(self.device)

    def planes(self) -> bool:
        """Whether the forward pass and the kernel gradient are conv_forward_planes and
        conv_kernel_gradient_planes (vectors of VW filters, each input value broadcast: no
        patches; the forward the bits of the other forms, the kernel gradient summed in
        another order): on CPUs, with the register-blocked GEMMs, where the patches are
        otherwise copied out (not `implicit`) and F >= VW / 2 filters (fewer than VW: one
        vector, part empty), and where the implicit GEMMs' rows are not whole runs of 8 (a
        run moved back repeats outputs), the patches have PLANES_ENTRIES entries or more and
        F >= VW (whole vectors: at part-empty ones the implicit forms ran faster; on a
        2-core AVX2 EPYC, networks with such layers of 5 to 12 filters, Grenade's inception
        among them, trained in 0.55-0.97x the time with the implicit forms, ran in
        0.48-0.94x: 4 in float32, 2 in float64). On a 2-core AVX-512 EPYC (PoCL 3.1),
        against the copy and its GEMMs (or `short_planes`' products) at 4 x 4 to 7 x 7
        planes and 9 x 9 at stride 2, 8 to 128 channels, 16 to 128 filters, batches 16 to
        256: the forward 0.42-0.69x its time (11 shapes), the kernel gradient with dy's
        layout 0.37-0.78x (9), both precisions; against the implicit GEMMs at rows of 9 to
        26 outputs: the forward 0.43-0.88x from 100 entries, 0.71-1.05x at 72, 1.09x at 27
        (12 shapes), the kernel gradient 0.65-0.92x from 72 (5); at rows of 8 and 16 the
        forward 1.04-1.22x. Networks of layers of VW / 2 filters (8 in float32, 4 in
        float64; 6 networks) trained in 0.80-1.05x the copy's time, ran in 0.48-0.92x; at VW
        / 4 (4 in float32) training took 1.24x."""
        c, _, _, f, kh, kw, _, _, _, ow = self.geometry()  # (a Deconvolution's: transposed)
        if self.device.gpu or self.device.gemm != "registers":
            return False
        if not self.implicit():
            return 2 * f >= vector_width(self.device)
        return f >= vector_width(self.device) and ow % 8 != 0 and c * kh * kw >= PLANES_ENTRIES

    def grid(self) -> int:
        """The implicit GEMMs' positions (conv_grid in kernels/convolution.cl): output rows
        rounded up to runs of 8."""
        *_, oh, ow = self.geometry()
        return oh * -(-ow // 8) * 8

    def runs_plane(self) -> int:
        """The values of a plane of dy laid out on the grid (conv_dy_runs' G): the grid's
        positions rounded up to 16."""
        return -(-self.grid() // 16) * 16

    def dy_runs(self) -> bool:
        """Whether the implicit kernel gradient reads dy laid out on the grid, in positions
        rounded up to 16 (conv_dy_runs): unless that is dy's own layout."""
        *_, oh, ow = self.geometry()
        return self.implicit() and not self.planes() and (ow % 8 != 0 or oh * ow % 16 != 0)

    def scatters(self) -> bool:
        """Whether the input delta is conv_scatter_delta (stride 1, the implicit GEMMs, the
        register-blocked GEMMs; where rows are not whole runs of 8, rows of SCATTER_ROWS or
        more, not the planes forms, whose kernel gradient lays dy out otherwise): then no
        launch reads patches."""
        ow = self.geometry()[9]
        return self.sh == 1 and self.implicit() and self.device.gemm == "registers" and (
            ow % 8 == 0 or ow >= SCATTER_ROWS and self.dy_runs())

    def flips(self) -> bool:
        """Whether the input delta is the forward pass of the convolution `turned` (one launch
        each: K turned, dy padded, then the implicit GEMM): at stride 1 with the
        register-blocked GEMMs, where the implicit GEMMs' rows are not whole runs of 8 and
        there are FLIP_CHANNELS input channels or more (the turned convolution's filters).
        On a 2-core AVX-512 EPYC (PoCL 3.1), two-convolution networks whose second layer is
        such trained in 0.70-1.01x the time of conv_scatter_delta's or conv_input_delta's in
        float32 (13 shapes, 6 to 24 channels, 4 to 32 filters, rows of 9 to 28), 0.67-0.94x in
        float64 (7), and Grenade's inception network in 0.84x and 0.88x (float32), 0.81x
        (float64); at 4 channels 1.20x, at 1 channel 1.42x, over rows of whole runs (the
        scatter's own grid) 1.03-1.31x (7 shapes)."""
        c, h, w, f, kh, kw, *_, ow = self.geometry()
        return self.sh == 1 and self.implicit() and ow % 8 != 0 and c >= FLIP_CHANNELS and \
            self.device.gemm == "registers" and not self.short_planes() and \
            f * (h + kh - 1) * (w + kw - 1) < 2**24  # (dy padded: offsets exact in float32)

    def joins_rows(self) -> bool:
        """Whether y and dy may be a Concat's columns (`Layer.joins_rows`): where the forward
        pass is the implicit GEMM, the kernel gradient reads dy laid out on its grid
        (`dy_runs`) and the input delta reads that or dy padded (`scatters`, `flips`): the
        launches reading dy or writing y then take any rows (conv_forward, conv_dy_runs,
        shift_planes). Not a Deconvolution, whose forward pass is an input delta."""
        return type(self) is Convolution and self.implicit() and not self.planes() and \
            self.dy_runs() and (self.scatters() or self.flips())

    def turned(self, kernel: cl_array.Array | None = None,
               below: Pad | None = None) -> Convolution:
        """The input delta as a convolution: F channels to C filters over dy padded all round
        by the kernel's size less one (kernels/reshape.cl's shift_planes, into "dy padded"),
        its kernel K with every plane turned half round (conv_flip_kernel, into `kernel`).
        With the Pad `below` (the layer before), the delta of that Pad's input alone: dy
        padded by that much less."""
        c, h, w, f, kh, kw, *_ = self.geometry()
        if below is not None:
            _, h, w = planes(below.in_shape)
        turned = Convolution(f, c, kh, kw, 1, 1)
        turned.bind(self.device, D3(h + kh - 1, w + kw - 1, f), None)
        if kernel is not None:
            turned.parameters["kernel"] = kernel
        return turned

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        c, h, w, f, kh, kw, _, _, oh, ow = self.geometry()
        if c * h * w >= 2**24:  # the offsets are exact in float32: checked before allocating
            raise ShapeError(f"takes samples of under 2^24 values, not {c * h * w}")
        # Patches, (n, R, positions), with a vector to spare (conv_col2im_rows; for
        # conv_input_delta, a vector after each sample's): the input delta's, and x's where
        # they are copied out
        chunks = self.kernel_chunks(n)
        wanted: dict[str, tuple[int, ...]] = {"rows": (c * kh * kw,), "zeros": (f,)}
        if self.flips():
            wanted |= {"dy padded": (n * f * (h + kh - 1) * (w + kw - 1),),
                       "turned": (c * kh * kw * f,), "turned rows": (f * kh * kw,)}
        elif not self.scatters():
            wanted["patches"] = (n * (c * kh * kw * oh * ow + vector_width(self.device)),)
        if chunks > 1:  # the chunked kernel gradient's sums
            wanted["chunks"] = (chunks * c * kh * kw * f,)
        if self.short_planes():  # y or dy filter-major
            wanted["by filter"] = (f * n * oh * ow,)
        if self.planes():  # dy positions-major
            wanted["dy positions"] = (n * oh * ow * f + vector_width(self.device),)
        if self.dy_runs():
            wanted["dy runs"] = (n * f * self.runs_plane(),)
        return wanted

    def kernel_chunks(self, n: int) -> int:
        """Chunks of the batch whose kernel gradients conv_kernel_gradient or gemm_dot (where
        the patches are copied out) sums apart, then adds up in order (gemm_sum_chunks): 1 on
        CPUs; on a GPU enough for SPLIT_OUTPUTS outputs in all (at most n). On an H200
        LeNet's first layer's kernel gradient, R x F = 25 x 10 outputs summed over the whole
        batch by 25 work-items, took 1.8 ms of a 2.5 ms step. (On a 2-core Ice Lake Xeon, 2
        chunks took that kernel gradient alone from 625 to 454 us at batch 64, but LeNet's epoch
        to 1.05x its time, interleaved: CPUs keep one.)"""
        if not self.device.gpu:
            return 1
        c, _, _, f, kh, kw, *_ = self.geometry()
        return max(1, min(n, SPLIT_OUTPUTS // (c * kh * kw * f)))

    def delta_buffers(self) -> set[str]:
        """The patches (and dy filter-major), where the forward pass and the kernel gradient
        read none: the implicit GEMMs' and the planes forms' (a first layer's otherwise unused
        buffer, as large as its input times kh kw); the turned convolution's dy and kernel."""
        turned = {"dy padded", "turned", "turned rows"}
        return turned | {"patches", "by filter"} if self.implicit() or self.planes() else turned

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        """The forward pass needs the patch entries' offsets, and the patches where they are
        copied out."""
        copies = not self.implicit() and not self.planes()
        return {k: v for k, v in self.batch_buffers(n).items()
                if k == "rows" or k in ("patches", "by filter") and copies}

    def setup(self, n: int, buffers: Buffers) -> list[Launch]:
        """The offsets of the patch entries in a sample, which the GEMMs or im2col read x
        through."""
        c, h, w, _, kh, kw, _, _, _, _ = self.geometry()
        return [self.device.launch("conv_row_offsets", (c * kh * kw,), c, h, w, kh, kw,
                                   buffers["rows"])] + self.turned_offsets(buffers)

    def turned_offsets(self, buffers: Buffers, below: Pad | None = None) -> list[Launch]:
        """The turned convolution's patch offsets (`turned`, with `below`), where the layer
        keeps them ("turned rows": it `flips`, and computes an input delta): a Series sets
        them again for a Pad before the layer (Series.setup)."""
        if "turned rows" not in buffers:
            return []
        return self.turned(below=below).setup(0, {"rows": buffers["turned rows"]})

    def _patch_args(self, n: int) -> tuple[int, ...]:
        """n, sample, R, F, P, OW, pitch: the implicit GEMMs' shape arguments."""
        c, h, w, f, kh, kw, sh, _, oh, ow = self.geometry()
        return n, c * h * w, c * kh * kw, f, oh * ow, ow, sh * w

    def im2col(self, n: int, x: cl_array.Array, buffers: Buffers) -> list[Launch]:
        """x's patches copied into buffers["patches"] (n, R, positions), or (R, n, positions)
        where `short_planes`."""
        _, sample, r, _, p, ow, pitch = self._patch_args(n)
        return [self.device.launch("conv_im2col", (r, n), n, sample, r, p // ow, ow, pitch,
                                   self.sw, int(self.short_planes()), buffers["rows"], x,
                                   buffers["patches"])]

    def convolve(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                 patched: bool = False) -> list[Launch]:
        """y (n, F, positions) = K^T x each sample's patches of x (n, C, H, W); `patched`: x's
        patches are in buffers["patches"] already (where they are copied out)."""
        args = self._patch_args(n)
        _, _, r, f, p, *_ = args
        if self.planes():
            return [blocks.launch(self.device, "conv_forward_planes", (n, r, f, p), lambda block: (
                self.device.launch(blocks.kernel_name("conv_forward_planes", block),
                                   (-(-p // block[0]),
                                    -(-f // (block[1] * vector_width(self.device))), n),
                                   *args, self.sw, buffers["rows"],
                                   self.parameters["kernel"], x, y,
                                   local=blocks.local("conv_forward_planes", block))))]
        if self.short_planes():  # one product over the batch, y filter-major, laid out back
            by_filter = buffers["by filter"]
            return ([] if patched else self.im2col(n, x, buffers)) + [
                gemm_outer(self.device, f, n * p, r, self.parameters["kernel"], 1, f,
                           buffers["patches"], by_filter),
                self.device.launch("conv_swap_planes", (f, n), n, f, p, 0, by_filter, y)]
        if not self.implicit():
            return ([] if patched else self.im2col(n, x, buffers)) + [
                gemm_outer(self.device, f, p, r, self.parameters["kernel"], 1, f,
                           buffers["patches"], y, batches=n, b_k=p, b_batch=r * p, c_m=p,
                           c_batch=f * p)]
        grid = self.grid()
        return [blocks.launch(self.device, "conv_forward", (n, r, f, p), lambda block: (
            self.device.launch(blocks.kernel_name("conv_forward", block),
                               (-(-grid // (block[1] * vector_width(self.device))),
                                -(-f // block[0]), n),
                               *args, buffers["rows"], self.parameters["kernel"], x, *rows(y),
                               local=blocks.local("conv_forward", block))))]

    def kernel_gradient(self, n: int, x: cl_array.Array, dy: cl_array.Array, buffers: Buffers,
                        patched: bool = False) -> list[Launch]:
        """dK = the sum over samples of x's patches x dy^T (dy: (n, F, positions)), straight
        into K's layout; `patched` as for `convolve`."""
        args = self._patch_args(n)
        _, _, r, f, p, *_ = args
        chunks, dk = self.kernel_chunks(n), self.gradients["kernel"]
        per = -(-n // chunks)
        out = buffers["chunks"] if chunks > 1 else dk
        if self.planes():
            return [self.device.launch("conv_dy_positions", (-(-p // 8), n), n, f, p, dy,
                                       buffers["dy positions"]),
                    blocks.launch(self.device, "conv_kernel_gradient_planes", (n, r, f, p),
                                  lambda block: self.device.launch(
                        blocks.kernel_name("conv_kernel_gradient_planes", block),
                        (-(-f // (block[1] * vector_width(self.device))), -(-r // block[0])),
                        *args, self.sw, buffers["rows"], x, buffers["dy positions"], dk,
                        local=blocks.local("conv_kernel_gradient_planes", block)))]
        if self.short_planes():
            by_filter = buffers["by filter"]
            return ([] if patched else self.im2col(n, x, buffers)) + [
                self.device.launch("conv_swap_planes", (f, n), n, f, p, 1, dy, by_filter),
                gemm_dot(self.device, r, f, n * p, buffers["patches"], by_filter,
                         buffers["zeros"], dk)]
        if not self.implicit():
            launches = ([] if patched else self.im2col(n, x, buffers)) + [
                gemm_dot(self.device, r, f, p, buffers["patches"], dy, buffers["zeros"], out,
                         batches=n, a_m=p, a_batch=r * p, b_n=p, b_batch=f * p,
                         chunks=chunks)]
        else:
            launches = []
            if self.dy_runs():
                launches.append(self.device.launch("conv_dy_runs", (f, n), n, f, p, args[5],
                                                   *rows(dy), buffers["dy runs"]))
                dy = buffers["dy runs"]
            launches.append(blocks.launch(self.device, "conv_kernel_gradient", (n, r, f, p),
                                          lambda block: self.device.launch(
                blocks.kernel_name("conv_kernel_gradient", block),
                (-(-f // block[1]), -(-r // block[0]), -(-n // per)), *args, buffers["rows"],
                x, dy, out, per, local=(*blocks.local("conv_kernel_gradient", block), 1))))
        if chunks > 1:
            launches.append(self.device.launch("gemm_sum_chunks", (r * f,), r * f, -(-n // per),
                                               out, dk))
        return launches

    def input_delta(self, n: int, dy: cl_array.Array, dx: cl_array.Array,
                    buffers: Buffers, relaid: bool = False, below: Pad | None = None
                    ) -> list[Launch]:
        """dx = col2im(K dy): at stride 1 with the register-blocked GEMMs one launch, of
        conv_scatter_delta where the GEMMs are implicit (`scatters`; where rows are not whole
        runs of 8, from dy laid out on their grid), else of conv_input_delta at the tuned block
        through the patches buffer, which it overwrites (a work-group per sample: 1.2x faster
        than the two launches, gemm_outer then col2im, that the other cases take); the same
        bits all three ways. Planes under a vector (`short_planes`), at stride 1: K dy over the
        whole batch into entry-major patches, then their col2im rows, the same bits. `relaid`:
        dy is laid out already as `kernel_gradient` leaves it (filter-major, or on the grid).
        `below`: where the layer `flips`, the Pad before it, whose input's delta dx then is
        (the Pad's backward pass left out; see Series.backward_below)."""
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        if self.flips():  # (the offsets in "turned rows" are set up for `below`)
            turned = self.turned(buffers["turned"], below)
            top, left = (0, 0) if below is None else (below.top, below.left)
            (_, th, tw), (data, first, stride) = planes(turned.in_shape), rows(dy)
            return [self.device.launch("conv_flip_kernel", (c * kh * kw,), c, kh, kw, f,
                                       self.parameters["kernel"], buffers["turned"]),
                    self.device.launch("shift_planes", (n * f * th,), n * f, oh, ow, th, tw,
                                       kh - 1 - top, kw - 1 - left, data, first, f, stride,
                                       buffers["dy padded"]),
                    *turned.convolve(n, buffers["dy padded"], dx,
                                     {"rows": buffers["turned rows"]})]
        if self.short_planes() and sh == sw == 1:  # one product K dy over the batch (dy
            # filter-major, as kernel_gradient leaves it where `relaid`), its col2im rows
            p, by_filter = oh * ow, buffers["by filter"]
            return ([] if relaid else [
                self.device.launch("conv_swap_planes", (f, n), n, f, p, 1, dy, by_filter)]) + [
                gemm_outer(self.device, c * kh * kw, n * p, f, self.parameters["kernel"], f, 1,
                           by_filter, buffers["patches"]),
                self.device.launch("conv_col2im_rows", (n * -(-c // COL2IM_CHANNELS) * h,), n,
                                   c, h, w, kh, kw, oh, ow, 1, buffers["patches"], dx)]
        if self.scatters():
            per_item = 2 if self.device.narrow else 3  # SCATTER_CHANNELS in convolution.cl
            on_grid, plane = [], oh * ow
            if ow % 8:  # dy on the grid of runs (as the kernel gradient lays it out)
                on_grid = [] if relaid else [self.device.launch(
                    "conv_dy_runs", (f, n), n, f, plane, ow, *rows(dy), buffers["dy runs"])]
                dy, plane = buffers["dy runs"], self.runs_plane()
            return on_grid + [self.device.launch(
                "conv_scatter_delta", (-(-c // per_item) * n,), n, c, h, w, kh, kw, oh, ow, f,
                plane, self.parameters["kernel"], dy, dx, local=(1,))]
        p, patches = oh * ow, buffers["patches"]
        if sh == sw == 1 and self.device.gemm == "registers":
            return [blocks.launch(self.device, "conv_input_delta", (n, c * kh * kw, p, f),
                                  lambda block: self.device.launch(
                                      blocks.kernel_name("conv_input_delta", block),
                                      (block[2] * n,), c, h, w, kh, kw, oh, ow, f,
                                      self.parameters["kernel"], dy, patches, dx,
                                      local=blocks.local("conv_input_delta", block)))]
        if sh == sw == 1:
            col2im = self.device.launch("conv_col2im_rows", (n * -(-c // COL2IM_CHANNELS) * h,),
                                        n, c, h, w, kh, kw, oh, ow, 0, patches, dx)
        else:
            split = self.device.gpu  # a work-item per 8 columns of a row's phase on GPUs
            col2im = self.device.launch("conv_col2im", (sw * h * (-(-w // (8 * sw)) if split
                                                                   else 1), n * c),
                                        n, c, h, w, kh, kw, sh, sw, oh, ow, patches, dx,
                                        int(split))
        return [gemm_outer(self.device, c * kh * kw, p, f, self.parameters["kernel"], f, 1, dy,
                           patches, batches=n, b_k=p, b_batch=f * p, c_batch=c * kh * kw * p),
                col2im]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.convolve(n, x, y, buffers)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers, below: Pad | None = None
                 ) -> list[Launch]:
        """`below`: as for `input_delta`."""
        launches = self.kernel_gradient(n, x, dy, buffers, patched=True)  # the forward's patches
        if dx is not None:  # then the patches are spent: dx's overwrite them
            launches += self.input_delta(n, dy, dx, buffers, relaid=not self.planes(),
                                         below=below)
        return launches

    def fused_args(self, i: int) -> list[tuple[str, cl_array.Array]]:
        return [(f"global REAL *{name}{i}", group["kernel"]) for name, group in (
            ("k", self.parameters), ("mk", self.momentum), ("vk", self.second))]

    def fused_forward(self, i: int) -> str | None:
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        if self._fused_blocks():  # blocks of 2 filters x 4 rows x 8 columns
            rows, cols = -(-oh // 4), -(-ow // 8)
            return (f"for (int q = lid; q < {-(-f // 2) * rows * cols}; q += nl) "
                    f"conv_direct_block({c}, {h}, {w}, {kh}, {kw}, {sh}, {f}, {oh}, {ow}, k{i}, "
                    f"{kh * kw * f}, {kw * f}, {f}, 1, a{i}, q / {rows * cols} * 2, "
                    f"q / {cols} % {rows} * 4, q % {cols} * 8, a{i + 1});")
        return (f"for (int q = lid; q < {f * oh}; q += nl) conv_direct_row({c}, {h}, {w}, {f}, "
                f"{kh}, {kw}, {sh}, {sw}, {ow}, k{i}, a{i}, q / {oh}, q % {oh}, "
                f"a{i + 1} + (size_t)q / {oh} * {oh * ow});")

    def _fused_blocks(self, rows: int = 4) -> bool:
        """Whether the fused forms run in blocks of vectors (conv_direct_block and its kin):
        column stride 1, output rows of 8 or more, `rows` or more of them (the kernel
        gradient's blocks take any number)."""
        _, _, _, _, _, _, _, sw, oh, ow = self.geometry()
        return sw == 1 and ow >= 8 and oh >= rows

    def _fused_patches(self, rows: int, cols: int) -> bool:
        """Whether the fused input delta (stride 1, in blocks), needed on `rows` x `cols` of
        each input plane, goes through the patches K dy and the col2im rows, rather than the
        correlation of K with dy padded all round, in blocks: where the outputs are under 3/4
        of the positions the blocks cover (each costs K's kh kw C F multiply-adds; the
        patches' extra pass costs the rest). LeNet's second layer: 64 outputs against 12 x 16
        positions; a same-size convolution after a Pad (InceptionMini's): 28 x 28 against
        28 x 32, where the blocks ran faster."""
        _, _, _, _, _, _, sh, _, oh, ow = self.geometry()
        return self._fused_blocks() and sh == 1 and 4 * oh * ow < 3 * (
            -(-rows // 4) * 4 * -(-cols // 8) * 8)

    def fused_scratch(self) -> int:
        """Stride 1 in blocks: room for either form of the input delta, the patches (R x P,
        and the vector of values conv_col2im_rows4 may read past them) or dy padded all round.
        (The patches are chosen for the whole plane if for any part.)"""
        c, h, w, f, kh, kw, sh, _, oh, ow = self.geometry()
        if not (self._fused_blocks() and sh == 1):
            return 0
        return max(f * (h + kh - 1) * (w + kw - 1),
                   c * kh * kw * oh * ow + vector_width(self.device)
                   if self._fused_patches(h, w) else 0)

    def fused_backward(self, i: int, input_delta: bool,
                       needed: tuple[int, int, int, int] | None = None) -> str | None:
        """`needed`: (top, left, rows, cols), the part of each input plane whose delta the
        layer before reads (a Pad's interior; default: all of it). Where the input delta runs
        in rows or blocks, only those covering that part run; values outside it are left as
        they were, or written (a row or block reaching past the part)."""
        # dx from the kernel before this example's update, as Grenade's backward pass does.
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        top, left, nh, nw = needed or (0, 0, h, w)
        if not input_delta:
            dx = ""
        elif self._fused_patches(nh, nw):  # conv_input_delta's sums: K dy, then col2im rows
            r, p = c * kh * kw, oh * ow
            dx = (rows_product(r, f"k{i}", f, 1, f, f"d{i + 1}", p, f"s{i}", p) +
                  f"for (int q = lid; q < {-(-c // COL2IM_CHANNELS) * nh}; q += nl) "
                  f"conv_col2im_rows4(q / {nh} * {COL2IM_CHANNELS}, {top} + q % {nh}, {c}, {h}, "
                  f"{w}, {kh}, {kw}, {oh}, {ow}, s{i}, d{i});\n"
                  "barrier(CLK_GLOBAL_MEM_FENCE);\n")
        elif self.fused_scratch():
            ph, pw, rows, cols = h + kh - 1, w + kw - 1, -(-nh // 4), -(-nw // 8)
            dx = (fused_shift(f"d{i + 1}", f"s{i}", f, oh, ow, ph, pw, kh - 1, kw - 1) +
                  "\nbarrier(CLK_GLOBAL_MEM_FENCE);\n"
                  f"for (int q = lid; q < {-(-c // 2) * rows * cols}; q += nl) "
                  f"conv_direct_delta_block({c}, {h}, {w}, {f}, {kh}, {kw}, k{i}, s{i}, "
                  f"q / {rows * cols} * 2, {top} + q / {cols} % {rows} * 4, "
                  f"{left} + q % {cols} * 8, d{i});\nbarrier(CLK_GLOBAL_MEM_FENCE);\n")
        else:
            g = ", ".join(str(v) for v in self.geometry())
            dx = (f"for (int c = lid; c < {c}; c += nl) conv_direct_delta_plane({g}, k{i}, "
                  f"d{i + 1}, c, d{i});\nbarrier(CLK_GLOBAL_MEM_FENCE);\n")
        if self._fused_blocks(rows=1):  # q: (c, a, pair of filters, 8 kernel columns)
            pairs, blocks, nb = -(-f // 2), -(-kw // 8), min(kw, 8)
            return dx + f"""for (int q = lid; q < {c * kh * pairs * blocks}; q += nl) {{
    const int ca = q / {pairs * blocks}, f0 = q / {blocks} % {pairs} * 2, b0 = q % {blocks} * 8;
    REAL g[16];
    conv_direct_kernel_block({h}, {w}, {kh}, {kw}, {sh}, {f}, {oh}, {ow}, {nb}, a{i}, d{i + 1},
                             ca / {kh}, ca % {kh}, f0, b0, g);
    for (int b = 0; b < min({nb}, {kw} - b0); ++b)
        for (int e = 0; e < min(2, {f} - f0); ++e)
            optimizer_at(opt, decay, g[8 * e + b], k{i}, mk{i}, vk{i},
                         (ca * {kw} + b0 + b) * {f} + f0 + e);
}}"""
        blocks = -(-kw // 8)  # q: (c, a, f, block of 8 kernel columns)
        return dx + f"""for (int q = lid; q < {c * kh * f * blocks}; q += nl) {{
    const int ca = q / ({f * blocks}), fb = q % ({f * blocks}), b0 = fb % {blocks} * 8;
    REAL g[8];
    conv_direct_kernel_grads({h}, {w}, {kh}, {kw}, {sh}, {sw}, {oh}, {ow}, a{i}, d{i + 1},
                             ca / {kh}, ca % {kh}, fb / {blocks}, b0, g);
    for (int b = 0; b < min(8, {kw} - b0); ++b)
        optimizer_at(opt, decay, g[b], k{i}, mk{i}, vk{i},
                     (ca * {kw} + b0 + b) * {f} + fb / {blocks});
}}"""
