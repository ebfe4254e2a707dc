"""Every kernel family at small odd sizes, run by tests/test_oclgrind.py under
`oclgrind --data-races`: both GEMM forms, the fused per-example loop in its one-lane and
coalesced (GPU) forms and for several networks at once (train_many), run_net's one-sample
loop, convolution (its one-launch input deltas too, and a GPU's kernel gradient in chunks),
FullyConnected's forward in parts of k (a GPU's) and from panels of W, its input delta from W's
column strips, its weights stepped in their gradient's GEMM, col2im, pooling, the recurrent
scans and updates (ordered and summed, clipped, through ConcatRecurrent), the fused window loop,
Dropout, BatchNorm, the activations, the losses, every optimiser and the benchmark's peak
kernel."""
import numpy as np

import grenade_py as g
from grenade_py import blocks, fused, gemm, runner
from grenade_py.exchange import Exchange
from grenade_py.layers import fully_connected

DEFAULT = blocks.default


def smallest_tiles(device, form, shape):
    """The tiled forms at their smallest tile shape: Oclgrind takes about a second over each
    work-group of the default's 256 work-items, their local memory checked for races. Every
    shape is the same template (gemm_tiled.cl), with the same edges and order of sums."""
    return blocks.SMALLEST_TILE if form in blocks.TILED_FORMS else DEFAULT(device, form, shape)


def default_tiles(d):
    """Each tiled form once at the default tile shape (64 x 64 x 16 of 4 x 4 here), over a
    product smaller than the tile in every dimension, and deeper than it."""
    m, n, k = 37, 41, 19
    a, b, bias, c = (d.zeros(s) for s in [(m, k), (n, k), (n,), (m, n)])
    gemm.gemm_dot(d, m, n, k, a, b, bias, c)()
    gemm.gemm_outer(d, m, n, k, a, k, 1, d.zeros((k, n)), c)()


def main() -> None:
    rng = np.random.default_rng(0)
    for precision in ("float32", "float64"):
        for form in ("registers", "tiled"):
            d = g.Device(precision=precision, gemm=form)
            if form == "tiled":
                blocks.default = DEFAULT
                default_tiles(d)
                blocks.default = smallest_tiles
            # dy^T and db: blocks of 8 rows, then one row; a vector of 8 columns, then one
            gemm.gemm_transpose_sums(d, 17, 9, d.zeros((17, 9)), d.zeros((9, 17)),
                                     d.zeros((9,)))()
            # (BatchNorm over 9 features: a run of 8 and one of 1)
            mlp = g.Network([g.FullyConnected(7, 9), g.BatchNorm(9), g.Gelu(), g.Dropout(0.3),
                             g.FullyConnected(9, 3), g.Softmax()], input=g.D1(7), device=d,
                            seed=1)
            g.fit(mlp, g.AdamW(0.01, clip_norm=0.5), rng.normal(size=(10, 7)),
                  np.eye(3)[rng.integers(0, 3, 10)], batch_size=4, epochs=1,
                  loss="cross_entropy", schedule="cosine")
            g.evaluate(mlp, rng.normal(size=(3, 7)), np.eye(3)[rng.integers(0, 3, 3)],
                       loss="cross_entropy")
            # 40 columns: gemm_outer's last block moved back onto the row's end, its reads
            # within the row (dW and dx of a layer of 40 inputs)
            # with Relus run in FullyConnected's launches: gemm_dot's relu output, gemm_outer's
            # reads of the Relu's input (moved back at 40 and 20 columns)
            wide = g.Network([g.Relu(), g.FullyConnected(40, 20), g.Relu(),
                              g.FullyConnected(20, 3)], input=g.D1(40), device=d, seed=1)
            g.run_gradient(wide, g.run_network(wide, rng.normal(size=(7, 40)))[0],
                           rng.normal(size=(7, 3)))
            # fit stepping those layers' weights in their gradients' GEMMs (registers form:
            # gemm_outer_update, moved back at 40 and 20 columns; outside tests, below
            # UPDATE_FUSED weights and UPDATE_FUSED_ROWS rows)
            least = fully_connected.UPDATE_FUSED, fully_connected.UPDATE_FUSED_ROWS
            fully_connected.UPDATE_FUSED = fully_connected.UPDATE_FUSED_ROWS = 0
            g.fit(wide, g.Adam(0.01), rng.normal(size=(7, 40)), rng.normal(size=(7, 3)),
                  batch_size=7, epochs=1)
            # and one row's (a rank-1 gemm_outer_update)
            g.train(wide, g.Adam(0.01), rng.normal(size=40), rng.normal(size=3))
            fully_connected.UPDATE_FUSED, fully_connected.UPDATE_FUSED_ROWS = least
            wide = g.Network([g.FullyConnected(40, 3)], input=g.D1(40), device=d, seed=1)
            g.run_gradient(wide, g.run_network(wide, rng.normal(size=(7, 40)))[0],
                           rng.normal(size=(7, 3)))
            # One row's forward (fc_forward): from 64 inputs, whole vectors, then the last values
            one = g.Network([g.FullyConnected(79, 3)], input=g.D1(79), device=d, seed=1)
            g.run_net(one, rng.normal(size=79))
            if form == "registers":  # the forward from panels of W (a wide CPU's from
                # PANEL_ROWS rows), forced: 5 rows, 70 outputs (a partial panel and vector), 19
                # inputs (VW-wide steps of k and a partial one), a Relu after it in its launch
                panelled = fully_connected.panel_size
                fully_connected.panel_size = lambda device, m, n, k: \
                    -(-n // 64) * 64 * k if n == 70 else 0  # (float64 panels need less)
                packed = g.Network([g.FullyConnected(19, 70), g.Relu(), g.FullyConnected(70, 3),
                                    g.Logit()], input=g.D1(19), device=d, seed=1)
                g.fit(packed, g.SGD(0.01), rng.normal(size=(5, 19)), rng.uniform(size=(5, 3)),
                      batch_size=5, epochs=1)
                fully_connected.panel_size = panelled
                # and an input delta from W's column strips (gemm_copy_panels), forced: 64
                # inputs (one float32 panel, two float64 ones), a Relu below in its launch
                outer = fully_connected.outer_panel_size
                fully_connected.outer_panel_size = lambda device, m, n, k: \
                    k * n if n == 64 else 0
                strips = g.Network([g.FullyConnected(5, 64), g.Relu(), g.FullyConnected(64, 9),
                                    g.Logit()], input=g.D1(5), device=d, seed=1)
                g.fit(strips, g.SGD(0.01), rng.normal(size=(5, 5)), rng.uniform(size=(5, 9)),
                      batch_size=5, epochs=1)
                fully_connected.outer_panel_size = outer
            # A stride-1 convolution's input delta: one launch, a work-group per sample
            # (registers; 24 positions: a vector moved back), or two (tiled).
            pair = g.Network([g.Convolution(1, 2, 2, 3, 1, 1), g.Convolution(2, 3, 3, 2, 1, 1)],
                             input=g.D2(7, 9), device=d, seed=1)
            g.fit(pair, g.SGD(0.01), rng.normal(size=(3, 7, 9)),
                  rng.normal(size=(3, *pair.output_shape.dims)), batch_size=3, epochs=1)
            # The input delta of 6 channels over rows of 12, and a Deconvolution's forward pass
            # of 6 outputs over them, as the turned convolution (registers: K turned, dy
            # padded, the implicit forward over rows of 11 and 14), the first the delta of its
            # Pad's input (dy padded by less, cut at the bottom)
            turned = g.Network([g.Convolution(1, 6, 1, 3, 1, 1), g.Pad(1, 0, 2, 2),
                                g.Convolution(6, 2, 2, 3, 1, 1), g.Deconvolution(2, 6, 2, 3, 1, 1)],
                               input=g.D2(4, 13), device=d, seed=1)
            g.fit(turned, g.SGD(0.01), rng.normal(size=(3, 4, 13)),
                  rng.normal(size=(3, *turned.output_shape.dims)), batch_size=3, epochs=1)
            # A Relu after a BatchNorm in its launches: over planes of 15 (a run of 8 and one of
            # 7) and over 9 features (the feature kernels; a run of 8 and one of 1), the last
            normed = g.Network([g.Convolution(1, 3, 1, 1, 1, 1), g.BatchNorm(3), g.Relu(),
                                g.Reshape(), g.FullyConnected(45, 9), g.BatchNorm(9), g.Relu()],
                               input=g.D2(3, 5), device=d, seed=1)
            g.fit(normed, g.SGD(0.01), rng.normal(size=(3, 3, 5)), rng.normal(size=(3, 9)),
                  batch_size=3, epochs=1)
            # A Concat nested in a Concat beside a Trivial: each joined into columns 30 .. and
            # 75 .. of rows of 105 (concat_rows/split_rows at a column, runs across the joins)
            nested = g.Network([g.Convolution(1, 2, 1, 1, 1, 1), g.Concat(g.Trivial(), g.Concat(
                [g.Pad(1, 1, 1, 1), g.Convolution(2, 3, 3, 3, 1, 1)], g.Tanh())), g.Reshape(),
                g.FullyConnected(105, 2)], input=g.D2(3, 5), device=d, seed=1)
            g.fit(nested, g.SGD(0.01), rng.normal(size=(3, 3, 5)), rng.normal(size=(3, 2)),
                  batch_size=3, epochs=1)
            # Convolutions writing into a Concat's rows and reading their deltas there
            # (registers: joins_rows): the turned convolution's dy padded from columns 28 ..
            # of rows of 140 (after a Pad too), conv_dy_runs' from columns 0 .. of rows of 98
            joined = g.Network([g.Convolution(1, 6, 1, 1, 1, 1), g.Concat(
                g.Convolution(6, 2, 1, 1, 1, 1),
                [g.Pad(1, 1, 1, 1), g.Convolution(6, 3, 3, 3, 1, 1)]),
                g.Concat(g.Convolution(5, 2, 1, 1, 1, 1), g.Tanh()), g.Reshape(),
                g.FullyConnected(196, 2)], input=g.D2(2, 14), device=d, seed=1)
            g.fit(joined, g.SGD(0.01), rng.normal(size=(3, 2, 14)), rng.normal(size=(3, 2)),
                  batch_size=3, epochs=1)
            # Planes under a vector (registers: 3 x 3, and 2 x 2 in float64 too): patches
            # entry-major, the kernel gradient and the input delta one product over the batch,
            # the col2im rows from entry-major patches (loads before and past each run)
            small = g.Network([g.Convolution(2, 3, 2, 2, 1, 1), g.Relu(),
                               g.Convolution(3, 2, 2, 2, 1, 1), g.Reshape(),
                               g.FullyConnected(8, 2)], input=g.D3(4, 4, 2), device=d, seed=1)
            g.fit(small, g.SGD(0.01), rng.normal(size=(3, 2, 4, 4)), rng.normal(size=(3, 2)),
                  batch_size=3, epochs=1)
            # Output rows of 8 and of 16 (registers: conv_scatter_delta, its last block part
            # filled, runs across rows, fewer channels than a work-item takes), the forward at
            # the narrow default (one vector of positions) and at 4 vectors (24 and 64
            # positions: a work-item's vectors past the last, and in part); rows of 19 (the
            # implicit GEMMs' last run of each row moved back: at 4 vectors a work-item's first
            # run is one); rows of 20 (conv_scatter_delta from dy on the grid, its runs moved
            # back onto each row's end)
            chosen = blocks.default
            for forward in (None, (6, 4, 8, 1, 8)):
                blocks.default = chosen if forward is None else (
                    lambda dev, form, shape, f=forward, before=chosen: f
                    if form == "conv_forward" else before(dev, form, shape))
                for shape, second in (((5, 12), g.Convolution(2, 3, 2, 3, 1, 1)),
                                      ((6, 21), g.Convolution(2, 2, 2, 4, 1, 1)),
                                      ((5, 24), g.Convolution(2, 3, 2, 3, 1, 1))):
                    eights = g.Network([g.Convolution(1, 2, 2, 3, 1, 1), second],
                                       input=g.D2(*shape), device=d, seed=1)
                    g.fit(eights, g.SGD(0.01), rng.normal(size=(3, *shape)),
                          rng.normal(size=(3, *eights.output_shape.dims)), batch_size=3,
                          epochs=1)
            # conv_forward_planes over rows of 4 and (stride 2) of 2, 17 and 16 filters: a
            # last vector of filters moved back; at 4 vectors a work-item, vectors past F
            for forward in (None, (3, 4, 1, 1, 1)):
                blocks.default = chosen if forward is None else (
                    lambda dev, form, shape, f=forward, before=chosen: f
                    if form == "conv_forward_planes" else before(dev, form, shape))
                planes = g.Network([g.Convolution(2, 17, 2, 2, 1, 1), g.Relu(),
                                    g.Convolution(17, 16, 2, 2, 2, 2)], input=g.D3(5, 5, 2),
                                   device=d, seed=1)
                g.fit(planes, g.SGD(0.01), rng.normal(size=(3, 2, 5, 5)),
                      rng.normal(size=(3, 16, 2, 2)), batch_size=3, epochs=1)
                g.run_net(planes, rng.normal(size=(2, 2, 5, 5)))
            blocks.default = chosen
            # ... of fewer filters than a vector (9: float32's, 5: float64's; one vector, part
            # empty): K's rows read to their last value, K the flat buffer's last values (32 x 9
            # floats, 16 x 5 doubles: whole alignment units), dy's positions on into its spare
            for channels, filters in ((8, 9), (4, 5)):
                few = g.Network([g.Convolution(channels, filters, 2, 2, 1, 1)],
                                input=g.D3(3, 3, channels), device=d, seed=1)
                g.fit(few, g.SGD(0.01), rng.normal(size=(3, channels, 3, 3)),
                      rng.normal(size=(3, filters, 2, 2)), batch_size=3, epochs=1)
        conv = g.Network([g.Convolution(1, 3, 3, 3, 1, 1), g.BatchNorm(3), g.Relu(),
                          g.Pooling(2, 2, 2, 2), g.Convolution(3, 2, 2, 2, 1, 1),
                          g.Deconvolution(2, 2, 2, 2, 1, 1), g.Pooling(2, 2, 1, 1), g.Reshape(),
                          g.FullyConnected(8, 2), g.LeakyRelu(), g.Sinusoid(), g.LeakyTanh()],
                         input=g.D2(8, 8), device=d, seed=1)
        g.fit(conv, g.SGD(0.01), rng.normal(size=(5, 8, 8)), rng.normal(size=(5, 2)),
              batch_size=5, epochs=1)
        g.run_net(conv, rng.normal(size=(2, 8, 8)))
        # Pooling windows apart, not 2 x 2 every 2 (pool_forward, pool_backward_cells): rows
        # and columns no window covers, between windows and past the last
        spaced = g.Network([g.Convolution(1, 1, 1, 1, 1, 1), g.Pooling(2, 2, 3, 3), g.Reshape(),
                            g.FullyConnected(12, 2)],
                           input=g.D3(8, 11, 1), device=d, seed=1)
        g.fit(spaced, g.SGD(0.01), rng.normal(size=(3, 1, 8, 11)), rng.normal(size=(3, 2)),
              batch_size=3, epochs=1)
        # Pad and Crop's row kernel; a strided convolution through im2col and col2im; one
        # example at a time layer by layer (Dropout has no fused form): FullyConnected's
        # one-row kernels.
        shifts = g.Network([g.Convolution(1, 2, 3, 3, 2, 2), g.Pad(1, 2, 0, 1), g.Crop(0, 1, 1, 0),
                            g.Reshape(), g.FullyConnected(40, 3), g.Dropout(0.5),
                            g.FullyConnected(3, 2)], input=g.D2(7, 9), device=d, seed=1)
        g.fit(shifts, g.SGD(0.01), rng.normal(size=(3, 7, 9)), rng.normal(size=(3, 2)),
              batch_size=3, epochs=1)
        g.train(shifts, g.SGD(0.01), rng.normal(size=(2, 7, 9)), rng.normal(size=(2, 2)),
                per_example=True)
        # im2col at column stride 2 a vector at a time (rows of 9: the last load ends one input
        # before the row's last copied), from a layer's own buffer, its last row the buffer's
        strided = g.Network([g.Convolution(1, 2, 1, 1, 1, 1), g.Convolution(2, 2, 3, 3, 1, 2),
                             g.Reshape(), g.FullyConnected(18, 2)], input=g.D2(3, 19),
                            device=d, seed=1)
        g.fit(strided, g.SGD(0.01), rng.normal(size=(3, 3, 19)), rng.normal(size=(3, 2)),
              batch_size=3, epochs=1)
        # The implicit GEMMs' runs of 8 columns (a last half vector in float32) and col2im's
        # vectors over rows of 8 and of 20 columns.
        for shape, layers in (((5, 12), [g.Convolution(1, 2, 3, 5, 1, 1),
                                         g.Convolution(2, 3, 1, 1, 1, 1)]),
                              ((4, 24), [g.Convolution(1, 2, 1, 5, 1, 1),
                                         g.Convolution(2, 1, 2, 3, 1, 1)])):
            runs = g.Network([*layers, g.Logit()], input=g.D2(*shape), device=d,
                             seed=1)
            g.fit(runs, g.SGD(0.01), rng.normal(size=(3, *shape)),
                  rng.uniform(size=(3, *runs.output_shape.dims)), batch_size=3, epochs=1)
        # A GPU's kernel gradient in chunks of the batch (gemm_sum_chunks), forced: one sample
        # a chunk, implicit (8 wide), then through copied-out patches (gemm_dot; 6 wide).
        unchunked = g.Convolution.kernel_chunks
        g.Convolution.kernel_chunks = lambda self, n: n  # type: ignore[method-assign]
        split = g.Network([g.Convolution(1, 2, 3, 5, 1, 1), g.Convolution(2, 1, 2, 3, 1, 1),
                           g.Logit()], input=g.D2(5, 12), device=d, seed=1)
        g.fit(split, g.SGD(0.01), rng.normal(size=(3, 5, 12)),
              rng.uniform(size=(3, *split.output_shape.dims)), batch_size=3, epochs=1)
        g.Convolution.kernel_chunks = unchunked  # type: ignore[method-assign]
        # FullyConnected's forward in parts of k (a GPU's, gemm.k_splits), forced: 4 parts of
        # 10 inputs summed apart (gemm_dot's chunks), then added in order (gemm_sum_chunks).
        whole = fully_connected.k_splits
        fully_connected.k_splits = lambda device, m, n, k: 4 if k == 40 else 1
        parts = g.Network([g.FullyConnected(40, 3), g.Logit()], input=g.D1(40), device=d,
                          seed=1)
        g.fit(parts, g.SGD(0.01), rng.normal(size=(3, 40)), rng.uniform(size=(3, 3)),
              batch_size=3, epochs=1)
        fully_connected.k_splits = whole
        for lanes in (1, 16):  # the one-lane loop and the coalesced (GPU) form
            fused.lanes = lambda device, lanes=lanes: lanes  # type: ignore[assignment]
            ff = g.Network([g.FullyConnected(3, 5), g.Tanh(), g.FullyConnected(5, 2),
                            g.Logit()], input=g.D1(3), device=d, seed=lanes)
            other = g.Network.from_spec(ff.spec(), device=d, seed=lanes + 1)
            # run_net's one-sample loop (fused.FusedRunner), once it has run a few samples
            for sample in rng.normal(size=(runner.FUSED_RUN_AFTER, 3)):
                g.run_net(ff, sample)
            # train's one-example loop, the step's own input and target buffers its data
            for sample, target in zip(rng.normal(size=(runner.FUSED_RUN_AFTER + 1, 3)),
                                      rng.uniform(size=(runner.FUSED_RUN_AFTER + 1, 2)),
                                      strict=True):
                g.train(ff, g.SGD(0.01), sample, target)
            for opt in (g.SGD(0.01), g.Adam(0.01)):
                g.train(ff, opt, rng.normal(size=(4, 3)), rng.uniform(size=(4, 2)),
                        per_example=True)
                g.train_many([ff, other], opt, rng.normal(size=(4, 3)),
                             rng.uniform(size=(4, 2)), np.array([[0, 1, 2], [3, 2, 1]]))
            # Convolution and Pooling in the loop: a row's vector and its tail, a stride of
            # 2, 2 x 2 windows, overlapping windows; Softmax under cross entropy.
            cnn = g.Network([g.Convolution(1, 2, 3, 3, 1, 1), g.Pooling(2, 2, 2, 2), g.Relu(),
                             g.Convolution(2, 2, 2, 3, 1, 2), g.Pooling(1, 2, 1, 1), g.Reshape(),
                             g.FullyConnected(2, 3), g.Softmax()], input=g.D2(6, 12), device=d,
                            seed=lanes)
            g.train(cnn, g.SGD(0.01), rng.normal(size=(2, 6, 12)), np.eye(3)[[0, 2]],
                    per_example=True, loss="cross_entropy")
            # The convolutions' blocks (moved back onto planes of 7 x 18 and 6 x 16; the input
            # delta's padded correlation), Concat, Merge, Pad and Crop in the loop.
            planes = g.Network([
                g.Convolution(1, 2, 3, 3, 1, 1), g.Relu(), g.Convolution(2, 2, 2, 3, 1, 1),
                g.Concat(g.Trivial(), [g.Pad(1, 1, 1, 1), g.Convolution(2, 1, 3, 3, 1, 1)]),
                g.Crop(1, 1, 1, 1), g.Merge(g.Trivial(), g.Tanh()), g.Reshape(),
                g.FullyConnected(168, 2), g.Logit()], input=g.D3(9, 20, 1), device=d,
                seed=lanes)
            g.train(planes, g.SGD(0.01), rng.normal(size=(2, 1, 9, 20)),
                    rng.uniform(size=(2, 2)), per_example=True)
            short = g.Network([g.Tanh(), g.Convolution(2, 3, 2, 3, 1, 1), g.Reshape(),
                               g.FullyConnected(72, 2), g.Logit()], input=g.D3(3, 14, 2),
                              device=d, seed=lanes)  # the kernel gradient's blocks, 2 rows
            g.train(short, g.SGD(0.01), rng.normal(size=(2, 2, 3, 14)),
                    rng.uniform(size=(2, 2)), per_example=True)
            deconv = g.Network([g.Reshape(g.D3(2, 3, 8)), g.Deconvolution(8, 3, 3, 2, 2, 2),
                                g.Relu(), g.Deconvolution(3, 1, 2, 3, 1, 1), g.Reshape(),
                                g.FullyConnected(48, 1), g.Logit()], input=g.D1(48), device=d,
                               seed=lanes)  # strides 2 and 1: patches, col2im, im2col; K's
            # gradient's rows of 8 and of 3 values
            g.train(deconv, g.SGD(0.01), rng.normal(size=(2, 48)), rng.uniform(size=(2, 1)),
                    per_example=True)
            lenet = g.Network([g.Convolution(1, 2, 3, 3, 1, 1), g.Pooling(2, 2, 2, 2),
                               g.Convolution(2, 3, 3, 3, 1, 1), g.Reshape(),
                               g.FullyConnected(27, 1)], input=g.D2(12, 12), device=d,
                              seed=lanes)  # a 3 x 3 kernel on 3 x 3 outputs
            g.train(lenet, g.SGD(0.01), rng.normal(size=(2, 12, 12)), rng.uniform(size=(2, 1)),
                    per_example=True)
            # The input delta through the patches K dy and the col2im rows (4 x 8 outputs of
            # 4 x 16 inputs), whose vector loads pass the last patch row
            rows = g.Network([g.Convolution(1, 2, 1, 1, 1, 1), g.Convolution(2, 2, 1, 9, 1, 1),
                              g.Reshape(), g.FullyConnected(64, 1)], input=g.D2(4, 16),
                             device=d, seed=lanes)
            g.train(rows, g.SGD(0.01), rng.normal(size=(2, 4, 16)), rng.uniform(size=(2, 1)),
                    per_example=True)
            # The GAN's exchange: two networks' passes, gradient-only and delta-only passes.
            critic = g.Network([g.Convolution(1, 2, 3, 3, 1, 1), g.Pooling(2, 2, 2, 2),
                                g.Reshape(), g.FullyConnected(12, 1), g.Logit()],
                               input=g.D2(6, 8), device=d, seed=lanes)
            maker = g.Network([g.FullyConnected(3, 6), g.Reshape(g.D3(2, 3, 1)),
                               g.Deconvolution(1, 1, 2, 2, 2, 2), g.Reshape(g.D2(4, 6)),
                               g.Pad(1, 1, 1, 1), g.Logit()], input=g.D1(3), device=d, seed=1)
            Exchange(critic, maker)(d.to_device(rng.uniform(size=(2, 6, 8))),
                                    d.to_device(rng.normal(size=(2, 3))), d.zeros((2,)), 0, 2,
                                    g.SGD(0.01), g.Adam(0.01))
        # 43 units: the LSTM step kernels' lanes of four vectors of 8, of one, and units alone
        rn = g.RecurrentNetwork([g.LSTM(3, 43), g.ConcatRecurrent(g.BasicRecurrent(43, 2),
                                                                   g.FullyConnected(43, 1)),
                                 g.FullyConnected(3, 3), g.Softmax()], input=g.D1(3), device=d,
                                seed=1)
        for summed in (False, True):
            g.train_sequences(rn, g.Adam(0.01, clip_norm=0.1), rng.normal(size=(2, 3, 3)),
                              np.eye(3)[rng.integers(0, 3, (2, 3))], np.ones((2, 3), bool),
                              summed=summed, loss="cross_entropy")
        g.SymbolCorpus(rn, rng.integers(0, 3, 30)).train(g.SGD(0.01), np.array([0, 5]), 4)
        g.run_recurrent(rn, rng.normal(size=(3, 3)))
        for lanes in (1, 4):  # the fused window loop, one lane and the GPU form
            fused.lanes = lambda device, lanes=lanes: lanes  # type: ignore[assignment]
            small = g.RecurrentNetwork([g.FullyConnected(2, 3), g.Tanh(), g.BasicRecurrent(3, 3),
                                        g.LSTM(3, 2), g.Softmax()], input=g.D1(2), device=d,
                                       seed=1)
            for opt, loss in ((g.SGD(0.01), "cross_entropy"), (g.AdamW(0.01), "squared_error")):
                g.train_sequences(small, opt, rng.normal(size=(3, 4, 2)),
                                  np.eye(2)[rng.integers(0, 2, (3, 4))],
                                  rng.uniform(size=(3, 4)) < 0.5, loss=loss,
                                  lengths=np.array([4, 1, 3]))
            g.SymbolCorpus(small, rng.integers(0, 2, 30)).train(
                g.SGD(0.01), np.array([0, 5, 9]), 4, loss="cross_entropy")
        for chains in (6, 8):
            d.launch(f"peak_fma_{chains}", (5,), 5, 3, d.dtype(0.9), d.dtype(0.1),
                     d.zeros((5,)))()
        d.queue.finish()
    print(f"workload done on {d.name}")


if __name__ == "__main__":
    main()
