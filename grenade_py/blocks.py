"""Register blocks and work-group shapes chosen on the device the kernels run on, and the
tuner that chooses them.

Each GEMM form the layers use is compiled at several register-block shapes (kernels/gemm.cl,
kernels/convolution.cl): gemm_dot (FullyConnected's forward, LSTM's input delta) in RM x RN
outputs per work-item, gemm_panels (FullyConnected's forward from W's panels, on wide CPUs
from gemm.PANEL_ROWS rows) in RM rows x CV vectors of a panel's 4, gemm_outer (the weight
gradients and input deltas, the recurrent input GEMM, a strided convolution's input delta) in
RM rows x CV vectors, gemm_outer_update (a FullyConnected weight gradient that steps the
weights: `Step.descend`) in the same blocks, conv_forward in FM filters x PV vectors of
positions, conv_kernel_gradient in RM patch entries x FN filters,
conv_input_delta (a stride-1 convolution's input delta where output rows are not whole vectors
of 8: gemm_outer's blocks, then col2im) in RM rows x CV vectors, conv_forward_planes and
conv_kernel_gradient_planes (`Convolution.planes`) in PM positions or RM patch entries x FV
vectors of filters; each runs in a few work-group shapes. The local-memory tiled GEMMs of GPUs
(kernels/gemm_tiled.cl: gemm_dot_tiled, gemm_outer_tiled) come in several tile shapes (TILES),
each its own work-group.
A candidate is a block and a shape; all give the same bits (they change which work-item
computes an output, not the order of its sum), so tuning changes speed only.

`python -m grenade_py.tune` (or `grenade_py.tune.tune_network`) times every candidate on the
launches of real networks (the MNIST architectures at the batch sizes given), on the device
itself, and keeps the fastest for each launch shape in the user's cache folder (`tuned.json`),
per platform, device, driver version, precision and GEMM form. Launches built afterwards, in
any process, take them; a shape never tuned gets the untuned default (`default`: the form's
first block, or WIDE_DEFAULT for large GEMMs; NARROW's on CPUs without 16-float vectors; the
first tile shape the device's limits allow).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grenade_py.device import Device, Launch
from grenade_py.errors import DeviceError
from grenade_py.platforms import cache_folder

log = logging.getLogger(__name__)

Block = tuple[int, ...]

#: The tiled GEMMs' shapes (kernels/gemm_tiled.cl; GPUs): tile rows, columns, depth, outputs
#: per work-item (rows, columns); the work-group is (columns / per item, rows / per item). The
#: untuned default is the first that the device's work-group and local memory limits allow
#: (`fits`): 64 x 64 x 16 of 4 x 4 (256 work-items, 16 accumulators), or on a GPU BIG_TILE for
#: a product of at least BIG_TILE_WAVES of its tiles per compute unit. On an NVIDIA H200 (issue
#: 19's GPU session, when one tile shape served every launch of a device) 64 x 64 x 16 ran
#: 1024^3 at 12.4-12.6 TFLOP/s and 4096^3 at 14.1; 128 x 128 of 8 x 8 ran 4096^3 (7.8 such
#: tiles per multiprocessor) at 21.5-22.8, but 1024^3 (0.5) at 7.7-8.7 and MNIST's shapes
#: slower.
TILES: tuple[Block, ...] = (
    (64, 64, 16, 4, 4), (32, 32, 16, 4, 4), (16, 16, 8, 2, 2), (8, 8, 8, 2, 2),
    (128, 128, 8, 8, 8), (128, 128, 16, 8, 8), (128, 64, 16, 8, 4), (64, 64, 8, 4, 4),
    (32, 64, 16, 4, 4))
BIG_TILE: Block = (128, 128, 8, 8, 8)
BIG_TILE_WAVES = 4
SMALLEST_TILE: Block = (8, 8, 8, 2, 2)
#: The forms whose blocks are tile shapes, their work-groups given by the shape.
TILED_FORMS = ("gemm_dot_tiled", "gemm_outer_tiled")

#: Each form's register blocks, the untuned default first: with the first of LOCALS, the
#: candidate whose time summed over the MNIST networks' launch shapes at batches 32 to 256 here
#: was least (gemm_dot_8x2 in (16, 4): 1.00x the sum of each of 24 shapes' fastest, against
#: 1.10x for 8x2 in (64, 1); gemm_outer_6x2 in (4, 4): 1.00x over 52 shapes, against 1.20x for
#: 16x1 in (64, 1); conv_kernel_gradient_5x4 in (1, 1): 1.00x over 16, against 1.07x in
#: (64, 1); conv_forward_6x4 in (8, 1, 8): 1.06-1.13x over the 16 of LeNet and bn in three
#: runs, against 1.62x for 12x1 in (64, 1, 1), the default when a work-item took one vector of
#: positions (on an AVX-512 EPYC, where the fastest of two vectors ran 1.15-1.2x as fast as
#: the fastest of one at LeNet's shapes); conv_input_delta_8x1 in (4,) work-items per sample:
#: 0.89x 6x2's time at LeNet's second layer, the fastest register block at 4 shapes).
#: gemm_outer's blocks of 3 and 4 vectors, on a 2-core Ice Lake Xeon (AVX-512): all six of
#: 6x4, 4x4, 8x3, 7x3, 5x4 and 4x3 ran FullyConnected's dW at 512 x 784 x 128..256 at 149-156
#: GFLOP/s against 136, but made the tuner take 109 s instead of 40, and MLP epochs took
#: 0.90-1.10x the time (paired medians, against the table before). Timed alone at dW's shapes,
#: 8x3 and 6x4 led (512 x 784 x 64 / 128 / 256: 134 / 185 / 125 against the default 6x2's 105 /
#: 126 / 101); with those two only the tuner takes 42 s warm, chooses them at 8 of the MLP's 12
#: gemm_outer shapes, and MLP epochs under tuned tables with and without them, taking turns
#: in one process (three runs, medians of 8), took at batches 32 / 64 / 128 / 256: 0.91-0.97 /
#: 0.91-1.05 / 0.88-0.93 / 0.81-0.95x the time. The kernel
#: gradient's 6x4 and 8x3 (24 accumulators, as gemm_dot's 6x4), on that Xeon: the tuner took
#: them at 11 and 14 of LeNet's and bn's 16 shapes in two runs, and LeNet's epochs under tuned
#: tables with and without them, taking turns, took 0.92-1.00x and 0.96-0.97x the time at
#: batches 32 to 256.
REGISTERS: dict[str, tuple[Block, ...]] = {
    "gemm_dot": ((8, 2), (4, 4), (4, 2), (6, 2), (2, 2), (3, 2), (2, 4), (4, 3), (5, 2), (3, 3),
                 (6, 4)),
    "gemm_outer": ((6, 2), (16, 1), (8, 1), (12, 1), (24, 1), (8, 2), (12, 2), (4, 1), (6, 1),
                   (8, 3), (6, 4)),
    "gemm_panels": ((6, 4), (5, 4), (4, 4), (12, 2), (8, 2), (6, 2)),
    "gemm_outer_update": ((8, 2), (6, 2), (16, 1), (8, 1), (12, 1), (24, 1), (12, 2), (4, 1),
                          (6, 1), (8, 3), (6, 4)),
    "conv_forward": ((6, 4), (12, 2), (10, 2), (8, 2), (6, 2), (5, 2), (4, 2), (12, 1), (10, 1),
                     (8, 1), (6, 1), (5, 1), (4, 1)),
    "conv_kernel_gradient": ((5, 4), (4, 4), (2, 8), (8, 2), (5, 2), (2, 2), (4, 1), (3, 2), (4, 3),
                             (6, 2), (3, 4), (6, 4), (8, 3)),
    "conv_input_delta": ((8, 1), (6, 2), (12, 1), (16, 1), (4, 1), (6, 1)),
    "conv_forward_planes": ((3, 4), (4, 4), (4, 2), (6, 2), (8, 2), (6, 1), (8, 1), (12, 1),
                            (16, 1)),
    "conv_kernel_gradient_planes": ((5, 4), (3, 4), (4, 4), (2, 4), (6, 2), (8, 2), (4, 2),
                                    (12, 1), (8, 1), (6, 1)),
    "gemm_dot_tiled": TILES,
    "gemm_outer_tiled": TILES,
}
#: Each form's work-group shapes, the default first: (64, 1) lays a group along one row of
#: output blocks; the squarer ones share both operands' panels between the group's work-items,
#: which PoCL runs one after another on one core (gemm_dot at 128 x 512 x 784: 140 GFLOP/s in
#: (64, 1), 200 in (16, 4)). The convolution's kernel gradient has few work-items, each
#: summing over every sample and position: one per group spreads them evenly over the cores
#: (5x4 in (1, 1) was within 4% of each of the MNIST networks' shapes' fastest, 64 x 1 up
#: to 19% slower). gemm_outer's (1, 16, 1) stacks 16 row blocks over one column strip of B,
#: which the group then reads from L1 (AVX2, 512 x 784 x 64..256, taking turns with the
#: block the launch took, 6x1 in (2, 8, 1) or (16, 4, 1): 3-15% faster in medians of 7; in
#: one tuner run the fastest at 5 of the MNIST networks' 44 gemm_outer shapes, 1.17x the
#: default at LeNet's 80 x 256 x 256, 1.01-1.06x at the other four).
#: gemm_outer_update (the weights' step in their gradient's GEMM) lays a group along a strip of
#: W's rows, whose weights and moments its work-items then read and write in order: on a 2-core
#: AVX-512 Xeon, MNIST's 512 x 784 x 64 dW with the update took 552 us a chain (forward, dW)
#: in (16, 1) against 947 in (1, 16) (8x2; the chain without the update 458).
LOCALS: dict[str, tuple[Block, ...]] = {
    "gemm_dot": ((16, 4), (64, 1), (8, 8), (32, 2)),
    "gemm_outer": ((4, 4, 1), (64, 1, 1), (16, 4, 1), (2, 8, 1), (1, 16, 1)),
    "gemm_panels": ((1, 16), (1, 8), (1, 4)),
    "gemm_outer_update": ((16, 1), (4, 4)),
    "conv_forward": ((8, 1, 8), (16, 1, 4), (64, 1, 1)),
    "conv_kernel_gradient": ((1, 1), (64, 1), (4, 4)),
    "conv_input_delta": ((4,), (8,), (2,)),
    "conv_forward_planes": ((1, 1, 1), (64, 1, 1)),
    "conv_kernel_gradient_planes": ((1, 1), (4, 1)),
    "gemm_dot_tiled": ((),),
    "gemm_outer_tiled": ((),),
}
#: Every candidate of each form: a register block, then a work-group shape.
FORMS: dict[str, tuple[Block, ...]] = {
    form: tuple(r + local for r in registers for local in LOCALS[form])
    for form, registers in REGISTERS.items()}
#: The untuned default of a large gemm_dot (one product of LARGE or more multiply-adds, WIDE or
#: more outputs per row): 6x4 in (8, 8), where the first of FORMS is 8x2 in (16, 4). Where the
#: default before, 4x4 in (16, 4), was chosen (a 2-core AVX-512 machine, PoCL 3.1, the
#: candidates taking turns, GFLOP/s 8x2 -> 4x4):
#: 1024^3 163 -> 193 and 174 -> 202, 1536^3 153 -> 204, 256 x 1024 x 1024 121 -> 158, 512^3
#: 126 -> 141 and 196 -> 196. 6x4 (24 accumulators, 6 + 1 operand vectors: 31 of AVX-512's 32
#: registers) loads 10 vectors per 24 FMAs where 4x4 loads 8 per 16; on a 2-core Ice Lake
#: Xeon (two runs, 4x4 in (16, 4) -> 6x4 in (8, 8)): 1024^3 151 -> 180 and 105 -> 112, 1536^3
#: 145 -> 161 and 102 -> 133, 512^3 119 -> 145 and 104 -> 115, 256 x 1024 x 1024 132 -> 154
#: and 101 -> 108; taking turns with numpy's sgemm at 1024^3, 125 -> 134 (numpy 158) and
#: 102 -> 128 (numpy 110). At MNIST's shapes (32..256 x 512 x
#: 784) the larger blocks are faster as kernels (the tuner took 6x4 at all four there, 1.06-
#: 1.26x the default) but MLP epochs were not (tuned tables with and without 6x4 taking
#: turns: 0.94-1.02x at batches 32..256): those keep the first; at narrow outputs (64 x 80 x
#: 256; N = 10) 4x4 was slower (76 -> 69, 65 -> 51).
LARGE = 2**27
WIDE = 256
WIDE_DEFAULT: Block = (6, 4, 8, 8)
#: The untuned gemm_dot of fewer than FEW_ROWS rows on a CPU: the first of FORMS, 8x2 in
#: (16, 4), computes m rounded up to 8 rows (10 rows as 16, 2 as 8). Below FEW_ROWS it takes the
#: block of SMALL_RM rows (two columns) that pads m the least in at most 4 row blocks, the
#: larger of those alike, in (16, 4), or in (64, 1) where one block holds every row. On a
#: 2-core AVX-512 EPYC (PoCL 3.1), taking turns with the first (medians of 7) at the 12 of m =
#: 2-25 tried where the two differ (2-6, 8-11, 13, 17, 20), n x k = 512 x 784, 300 x 784 and
#: 100 x 300: 0.49-1.27x its time with W in the caches (run_net's calls), 0.84x at the median;
#: 0.54-1.32x with W just written (a training step's), 0.87x. From 32 rows the first's groups
#: of 4 row blocks are full.
FEW_ROWS = 32
SMALL_RM = (8, 6, 5, 4, 3, 2)
#: The untuned blocks on CPUs whose vectors hold 8 floats (AVX2; `narrow`), where a vector of
#: gemm.cl's 16 lanes takes two of the 16 registers and the blocks above spill. Each is the
#: candidate whose time summed over the MNIST networks' launch shapes at batches 32 to 256 was
#: least on a 2-core AMD EPYC without AVX-512 (PoCL 3.1, "pthread-haswell"), in two runs
#: (x the sum of each shape's fastest, against the wide CPUs' default): gemm_dot_4x3 in (16, 4)
#: (its vectors there 8 lanes, one register: DOT_VW in gemm.cl) 1.07x, the fastest at 1024^3
#: (163 GFLOP/s, where the default before, 3x2 in 16 lanes, ran at 111); gemm_outer_6x1 in
#: (2, 8, 1) 1.05-1.07x against 6x2's 1.24-1.25x. Over LeNet's
#: convolutions at the same batches: conv_forward_6x1 in (16, 1, 4) 1.07-1.10x against 8x1's
#: 1.64-1.66x; conv_input_delta_4x1 in (4,) 1.04-1.05x against 6x2's 1.52-1.56x;
#: conv_kernel_gradient_5x2 in (1, 1) 1.09-1.11x against 5x4's 1.19-1.23x in 16 lanes, and
#: 1.12x in 8 (DOT_VW, as gemm_dot: 4x3 1.08x, but 1.17x at batch 64). The 2x2, 3x2, 2x4,
#: 4x3, 5x2 and 3x3 gemm_dot, 4x1 and 6x1 gemm_outer, 4x1, 5x1 and 6x1 conv_forward, 2x2, 4x1, 3x2,
#: 4x3, 6x2 and 3x4 conv_kernel_gradient, and 4x1 and 6x1 conv_input_delta blocks are there
#: for these CPUs: their accumulators fit the registers. gemm_outer_update's is gemm_outer's
#: block in its own work-group shape: on such an EPYC, at the MNIST MLP's 512 x 784 dW with the
#: step, over 32 to 256 rows (medians of 5 rounds taking turns), within 1.05x of the fastest of
#: its candidates (6x1 in (4, 4), 0.95x its time at 256 rows, 1.04-1.06x at the others).
NARROW: dict[str, Block] = {
    "gemm_dot": (4, 3, 16, 4), "gemm_outer": (6, 1, 2, 8, 1), "conv_forward": (6, 1, 16, 1, 4),
    "conv_kernel_gradient": (5, 2, 1, 1), "conv_input_delta": (4, 1, 4),
    "gemm_outer_update": (6, 1, 16, 1)}

#: The untuned blocks on AMD CPUs of 16-float vectors (Zen 4: PoCL's "skylake-avx512" on an
#: AMD EPYC) where they differ from the first of FORMS (the other wide CPUs' defaults): the
#: tuner's choices for the MNIST MLP on a 2-core EPYC (gemm_outer at its dW of batch 32,
#: gemm_panels at 256, gemm_outer_update at 256; 6x1 or 8x1 in (16, 1) at 64 and 128). There,
#: MLP epochs with no tuned table took 1.00x, 1.06x and 1.20x the tuned table's time at batch
#: 32, 64 and 256 under FORMS' first, and 0.98x, 1.01x and 0.99x under these (medians by round,
#: the three taking turns for 15 rounds; at 128, 9 rounds: 1.09x against 0.98x); LeNet's at 64
#: 1.03x against 1.00x.
AMD_WIDE: dict[str, Block] = {"gemm_outer": (6, 1, 4, 4, 1), "gemm_panels": (4, 4, 1, 8),
                              "gemm_outer_update": (8, 1, 4, 4)}

#: The untuned blocks on CPUs of 16-float vectors of a gemm_outer or conv_input_delta whose
#: rows are narrower than one vector (N < VW: a convolution's output plane of fewer than 16
#: positions, a FullyConnected layer of fewer inputs), whose columns then go into one vector
#: lane by lane: more rows per work-item share each such load. On a 2-core AVX-512 EPYC (PoCL
#: 3.1), over 11 gemm_outer shapes of such convolutions' forward passes and such layers' weight
#: gradients and input deltas (3 rounds), 16x1 in (16, 4, 1) took 1.22x the time of each
#: shape's fastest of 9 candidates (geometric mean), the AMD default 6x1 in (4, 4, 1) 1.74x
#: (2-3.5x at the convolutions); conv_input_delta's 16x1 in (8,) 1.0-1.17x at 3 shapes of 4
#: and 9 positions, its default 8x1 in (4,) 1.25-2.6x.
NARROW_ROWS: dict[str, Block] = {"gemm_outer": (16, 1, 16, 4, 1), "conv_input_delta": (16, 1, 8)}

#: The untuned block on CPUs of 16-float vectors of a gemm_dot over a batch of products (a
#: convolution's kernel gradient from its copied-out patches, summed over the samples): on a
#: 2-core AVX-512 EPYC (PoCL 3.1), over 10 such shapes of convnets on 9 x 9 to 32 x 32 inputs,
#: each at most 2.6x (geometric mean 1.77x) the fastest of 7 candidates under FORMS' first,
#: 8x2 in (16, 4), 1.99x (1.26x) under 6x4 in (16, 4): a 28 x 28 plane's 288 x 64 x 784 over
#: 64 samples 21.3 ms against 23.9 under 6x4 there, but 9.8 against 4.9 at 200 x 32 x 144
#: over 256 and 2.0 against 1.1 at 27 x 32 x 900 over 64 (two rounds).
BATCHED_DOT: Block = (6, 4, 16, 4)

#: The untuned conv_forward blocks on AMD CPUs of 16-float vectors (`amd_wide`): the one
#: whose filter blocks cost least for the layer's F filters, at ceil(F / FM) blocks of FM
#: filters each costing FM + GATHER_COST (a block's filters past F are computed and dropped;
#: each block gathers its own positions), where FORMS' first, 6x4, computes 6 filters at F = 3
#: and 12 at F = 9 or 10. The kernel gradient's likewise: 8x3 where F fills blocks of 3 filters
#: better than blocks of 4, else 6x4 (both in one work-item groups). On a 2-core EPYC (Zen 4,
#: PoCL 3.1), over the 36 conv_forward and 30 conv_kernel_gradient launch shapes of LeNet, bn
#: and inception at batches 32, 64 and 128 (5 rounds each, float32), these took a geometric
#: mean 1.10x and 1.05x the time of each shape's fastest block (at most 1.71x and 1.38x), the
#: blocks before 1.28x and 1.24x (at most 1.70x and 1.75x). Training steps, taking turns with
#: the blocks before: inception's 0.88-0.92x the time at those batches (float32; 0.95x and
#: 0.99x in float64 at 64 and 128), LeNet's 0.93-0.98x (1.01x and 0.92x), bn's 0.96-1.04x
#: (0.96-1.05x), the same bits.
FILTER_BLOCKS: tuple[Block, ...] = ((12, 1, 16, 1, 4), (10, 1, 16, 1, 4), (8, 1, 16, 1, 4),
                                    (6, 4, 8, 1, 8), (5, 1, 16, 1, 4), (4, 1, 16, 1, 4))
GATHER_COST = 2
#: The conv_forward register blocks the tuner leaves out there: over those 36 shapes the
#: fastest of the other candidates was as fast (a geometric mean 1.016x each shape's fastest
#: of all 39 with them or without), and `python -m grenade_py.tune`'s first run compiled
#: FILTER_BLOCKS' three more in 31.5 s against 27.3 before them.
AMD_LEFT_OUT: tuple[tuple[int, ...], ...] = ((6, 2), (12, 2))

#: The untuned blocks on GPUs where they differ from the first of FORMS: the tuner's most
#: frequent choice on an NVIDIA H200 (OpenCL 3.0, CUDA 13.0) over the MNIST networks' launch
#: shapes at batches 32 to 256 (x the summed time of the defaults before: FORMS' first, and
#: conv_forward 12x1 in (64, 1, 1)): conv_kernel_gradient 3x2 in (4, 4), the choice at 12 of 16
#: shapes (5x4 in (1, 1), one work-item a group, took 17.9x the tuned sum: 10.9 ms against
#: 0.61 ms); conv_forward 4x1 in (64, 1, 1), at 5 of 14 (4x1 in (16, 1, 4) at 4; 12x1 took
#: 1.38x); gemm_outer_tiled 32 x 64 x 16 of 4 x 4, at 36 of 50 (64 x 64 took 1.08x).
GPU: dict[str, Block] = {"conv_forward": (4, 1, 64, 1, 1), "conv_kernel_gradient": (3, 2, 4, 4),
                         "gemm_outer_tiled": (32, 64, 16, 4, 4)}

#: The untuned conv_forward_planes and conv_kernel_gradient_planes of 1, 2 and 4 or more
#: vectors of filters (F / VW) on CPUs of 16-float vectors, each in one work-item groups. On a
#: 2-core AVX-512 EPYC (PoCL 3.1), the fastest forward at F = 64 and 128 was 3x4 or 4x4 (6
#: shapes), at F = 32 4x2, 6x1 or 8x2 (4 shapes), at F = 16 16x1 or 6x1; the fastest kernel
#: gradient at F = 64 and 128 5x4 or 3x4 (6 shapes, both precisions), at F = 32 6x2 or 8x2 (4),
#: at F = 16 12x1; each other block there 1.05-3x the fastest's time.
PLANES: dict[str, tuple[Block, ...]] = {
    "conv_forward_planes": ((6, 1, 1, 1, 1), (4, 2, 1, 1, 1), (3, 4, 1, 1, 1)),
    "conv_kernel_gradient_planes": ((12, 1, 1, 1), (6, 2, 1, 1), (5, 4, 1, 1))}
#: PLANES' blocks on CPUs of 8-float vectors (`narrow`), where a vector of 16 filters takes two
#: registers. On a 2-core AMD EPYC without AVX-512 (PoCL 3.1), at 8 shapes of 4 x 4 to 9 x 9
#: planes, 8 to 128 filters (medians of 11 rounds taking turns): the forward's 6x1 was the
#: fastest block or within 1.17x of it at every shape; the kernel gradient's 4x2 within 1.04x
#: (float32) and 1.11x (float64) of the fastest from 2 vectors of filters, 8x1 within 1.07x at
#: one, where the 6x1 that both took before ran 1.09-1.36x the fastest's time.
NARROW_PLANES: dict[str, tuple[Block, ...]] = {
    "conv_forward_planes": ((6, 1, 1, 1, 1),) * 3,
    "conv_kernel_gradient_planes": ((8, 1, 1, 1), (4, 2, 1, 1), (4, 2, 1, 1))}

#: On CPUs of 16-float vectors (AVX-512), the fewest accumulator vectors of the blocks the
#: tuner times of these forms. On a 2-core AVX-512 Xeon, in two tunings of the MNIST networks
#: at batches 32 to 256 (24 launch shapes of each form a tuning), none of the blocks left out
#: was ever among the FINALISTS: the convolution's forward in 4x2, 8x1, 6x1, 5x1 and 4x1
#: (1.04-1.22x the fastest score alone), its kernel gradient in 2x2, 4x1 and 3x2 (1.40-1.93x).
#: Leaving them out made `python -m grenade_py.tune`'s first run take 59 s instead of 67 there.
#: The weights' step (gemm_outer_update) keeps all its blocks: on a 2-core AMD EPYC with
#: AVX-512 (PoCL 3.1, "skylake-avx512") the tuner took 6x1 or 8x1 at all four MNIST MLP
#: shapes, where among those of 20 or more and the default 8x2 it had taken 6x4, 8x3, 24x1 or
#: 8x2, and MLP steps at batch 256
#: with the step in the GEMM went from 1.06x the two passes' time (2.46 ms against 2.33) to
#: 1.00x (2.31-2.40 against 2.30-2.40); the first run took 59 s with them, 60 without.
WIDE_LEAST = {"conv_forward": 10, "conv_kernel_gradient": 10}

#: The forms whose vectors are DOT_VW lanes (kernels/gemm.cl): on narrow CPUs one register.
DOT_FORMS = ("gemm_dot", "conv_kernel_gradient")


def narrow(device: Device) -> bool:
    """Whether `device` is a CPU whose vectors hold fewer than 16 floats (no AVX-512)."""
    return device.narrow


def amd_wide(device: Device) -> bool:
    """Whether `device` is an AMD CPU whose vectors hold 16 floats (AMD_WIDE's): PoCL names
    the CPU's vendor ("AuthenticAMD"; its vendor id is Intel's, 0x8086, on any CPU)."""
    return not device.gpu and not narrow(device) and "AMD" in device.cl_device.vendor


def candidates(device: Device, form: str) -> tuple[Block, ...]:
    """The blocks the tuner times for `form` on `device`: every one, except that on narrow CPUs
    the blocks of more than 10 accumulator vectors (more than their 16 registers hold beside
    the operands) are left out, and of the dot forms (DOT_FORMS: their vectors there take one
    register each) all but those of 6 to 12. Over the MNIST networks' GEMM launch shapes on
    such a CPU (two runs, 68 shapes each), one of the others was more than 5% faster than every
    other block only at launches of 7-19 us, by 1-6 us; over LeNet's convolutions at batches
    32-256 the fastest forward and input delta blocks held 4 to 10 accumulators, and over the
    MNIST networks' 17 gemm_dot shapes and LeNet's 8 kernel gradients (in 8 lanes) every
    fastest block 6 to 12. On CPUs of 16-float vectors, the blocks of fewer than WIDE_LEAST
    accumulator vectors are left out (but for the untuned defaults: the form's first, and on
    AMD's the FILTER_BLOCKS of conv_forward), and on AMD's conv_forward's AMD_LEFT_OUT. A form
    none of whose blocks a narrow CPU holds (gemm_panels, which runs there only where a test
    forces it) keeps its first. The tiled forms' tile shapes: those the device's limits allow
    (`fits`)."""
    if form in TILED_FORMS:
        return tuple(b for b in FORMS[form] if fits(device, b))
    width = len(REGISTERS[form][0])
    if not narrow(device):
        least = 1 if device.gpu else WIDE_LEAST.get(form, 1)
        own, out = (FILTER_BLOCKS, AMD_LEFT_OUT) if form == "conv_forward" and \
            amd_wide(device) else ((), ())
        return tuple(b for b in FORMS[form] if b[:width] not in out and (
            math.prod(b[:width]) >= least or b == FORMS[form][0] or b in own))
    low, high = (6, 12) if form in DOT_FORMS else (1, 10)
    return tuple(b for b in FORMS[form] if low <= math.prod(b[:width]) <= high) or \
        FORMS[form][:1]


def local(form: str, block: Block) -> Block:
    """The work-group shape `block` gives its launches (a tile shape's: its work-items
    across the tile's columns, then its rows)."""
    if form in TILED_FORMS:
        rows, columns, _, per_row, per_column = block
        return columns // per_column, rows // per_row, 1
    return block[len(REGISTERS[form][0]):]


def fits(device: Device, tile: Block) -> bool:
    """Whether the device runs a tile shape's work-groups and holds its two operand tiles in
    local memory (each row of a tile one value longer: kernels/gemm_tiled.cl's padding)."""
    rows, columns, depth, per_row, per_column = tile
    items = rows // per_row * (columns // per_column)
    local_bytes = depth * (rows + columns + 2) * np.dtype(device.dtype).itemsize
    return items <= device.cl_device.max_work_group_size and \
        local_bytes <= device.cl_device.local_mem_size


#: A tunable launch: its form, launch shape, the launch at a given block, and the launch built.
Site = tuple[str, Block, Callable[[Block], Launch], Launch]
#: The sites of the tunable launches built while `recording` (None otherwise).
_sites: list[Site] | None = None


def kernel_name(form: str, block: Block) -> str:
    """The kernel of `form` at `block`'s registers, e.g. gemm_dot_4x4."""
    return f"{form}_{'x'.join(map(str, block[:len(REGISTERS[form][0])]))}"


def label(form: str, block: Block) -> str:
    """How a candidate is named: its kernel and work-group shape."""
    return f"{kernel_name(form, block)} in ({', '.join(map(str, local(form, block)))})"


def identity(device: Device) -> str:
    """What a tuned result holds for: platform, device, its compute units, driver, precision and
    GEMM form. (PoCL names a CPU device by its LLVM target and model name alone, which a 2-core
    and a 16-core machine, or containers given different cores, share: their fastest blocks and
    work-group shapes need not be.)"""
    d = device.cl_device
    return "|".join([d.platform.name.strip(), d.platform.version.strip(), d.name.strip(),
                     f"{d.max_compute_units} units", d.driver_version.strip(), device.precision,
                     device.gemm])


def record_path() -> Path:
    return cache_folder() / "tuned.json"


def _records() -> dict[str, dict[str, dict[str, list[int]]]]:
    try:
        records = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def table(device: Device) -> dict[str, dict[str, list[int]]]:
    """The device's tuned blocks, form -> launch shape ("m,n,k,...") -> block; read once per
    Device."""
    kept = device.__dict__.get("_tuned")
    if kept is None:  # the file is the user's: entries of another shape are left out
        found = _records().get(identity(device))
        kept = device.__dict__["_tuned"] = {
            form: shapes for form, shapes in found.items() if isinstance(shapes, dict)
        } if isinstance(found, dict) else {}
    return kept


def key(shape: Block) -> str:
    """How the table names a launch shape: "m,n,k,..."."""
    return ",".join(map(str, shape))


def block(device: Device, form: str, shape: Block) -> Block:
    """The block a launch of `form` over `shape` runs at on `device`: the tuned one, else the
    default."""
    chosen = table(device).get(form, {}).get(key(shape))
    if isinstance(chosen, list) and tuple(chosen) in FORMS[form]:
        return tuple(chosen)
    return default(device, form, shape)


#: Choices between two ways of running a layer that give the same bits, which the tuner makes
#: per launch shape by timing training steps each way (`tune.tune_choices`), kept in the table
#: as [1] (the first way) or [0]: "update_fused", a FullyConnected layer's weights (o, i)
#: stepped over n rows in their gradient's GEMM or by the update after it
#: (`FullyConnected.update_fused`). Untuned, each takes its rule's answer. (The forward from
#: panels of W, or from W in place, is no such choice: the two sum in different orders.)
CHOICES = ("update_fused",)


def chosen(device: Device, name: str, shape: Block, rule: bool) -> bool:
    """Whether `device` runs choice `name` at `shape` the first way: as the tuner chose, else
    as `rule` says."""
    kept = table(device).get(name, {}).get(key(shape))
    return bool(kept[0]) if kept in ([0], [1]) else rule


def big_tiles(device: Device, shape: Block) -> int:
    """The BIG_TILE tiles of a product of shape (m, n, ...) on a GPU where BIG_TILE fits and m
    and n are each at least its side (none of its rows or columns idle); else 0."""
    m, n = shape[:2]
    if not device.gpu or not fits(device, BIG_TILE) or m < BIG_TILE[0] or n < BIG_TILE[1]:
        return 0
    return -(-m // BIG_TILE[0]) * -(-n // BIG_TILE[1])


def default(device: Device, form: str, shape: Block) -> Block:
    """The untuned block of a launch of `form` over `shape` on `device`: a tiled form's first
    tile shape that `fits` (on a GPU, GPU's first; else the smallest), BIG_TILE on a GPU where
    it fits and the product (m, n, ...) is at least BIG_TILE_WAVES of them per compute unit, or
    is a gemm_dot_tiled (m, n, k, batches, chunks) whose `big_tiles` in its chunks are one or
    more per unit (as `gemm.k_splits` makes its parts); the planes forms' by their vectors of
    filters (PLANES', or NARROW_PLANES' on a CPU of 8-float vectors); NARROW's on a CPU of
    8-float vectors (gemm_panels, which runs on wider CPUs only, has none);
    GPU's on a GPU; NARROW_ROWS' on a CPU of 16-float vectors for a product narrower than one
    of its vectors, BATCHED_DOT there for a gemm_dot over a batch of products; AMD_WIDE's on an
    AMD CPU of 16-float vectors (`amd_wide`), and there the convolution's forward and kernel
    gradient blocks by its filters (FILTER_BLOCKS);
    else WIDE_DEFAULT for a gemm_dot (m, n, k, batches) of one product of
    m n k >= LARGE and n >= WIDE, FEW_ROWS' rule for a CPU's gemm_dot of fewer rows, else the
    form's first."""
    m, n, k, *rest = shape
    if form in TILED_FORMS:
        tiles, units = -(-m // BIG_TILE[0]) * -(-n // BIG_TILE[1]), \
            device.cl_device.max_compute_units
        chunks = rest[1] if form == "gemm_dot_tiled" else 1
        if device.gpu and fits(device, BIG_TILE) and tiles >= BIG_TILE_WAVES * units or \
                chunks > 1 and big_tiles(device, shape) * chunks >= units:
            return BIG_TILE
        first = (GPU[form],) if device.gpu and form in GPU else ()
        return next((b for b in first + FORMS[form] if fits(device, b)), SMALLEST_TILE)
    if form in PLANES:
        vectors = k // (64 // np.dtype(device.dtype).itemsize)  # (shape: n, R, F, P)
        return (NARROW_PLANES if narrow(device) else PLANES)[form][min(vectors, 4) // 2]
    if narrow(device) and form in NARROW:
        return NARROW[form]
    if device.gpu and form in GPU:
        return GPU[form]
    if not device.gpu and form in NARROW_ROWS and \
            shape[1 if form == "gemm_outer" else 2] < 64 // np.dtype(device.dtype).itemsize:
        return NARROW_ROWS[form]
    if form == "gemm_dot" and not device.gpu and rest and rest[0] > 1:
        return BATCHED_DOT
    if form in AMD_WIDE and amd_wide(device):
        return AMD_WIDE[form]
    if form == "gemm_dot" and rest == [1] and n >= WIDE and m * n * k >= LARGE:
        return WIDE_DEFAULT
    if form == "conv_forward" and amd_wide(device):
        return min(FILTER_BLOCKS, key=lambda b: (-(-k // b[0]) * (b[0] + GATHER_COST), -b[0]))
    if form == "conv_kernel_gradient" and amd_wide(device):
        return (8, 3, 1, 1) if -(-k // 3) * 3 < -(-k // 4) * 4 else (6, 4, 1, 1)
    if form == "gemm_dot" and not device.gpu and m < FEW_ROWS:
        rows = min((r for r in SMALL_RM if -(-m // r) <= 4), key=lambda r: (-(-m // r) * r, -r))
        return (rows, 2, 64, 1) if rows == m else (rows, 2, 16, 4)
    return FORMS[form][0]


def launch(device: Device, form: str, shape: Block,
           build: Callable[[Block], Launch]) -> Launch:
    """`build`'s launch at the block chosen for `shape` (see `block`)."""
    built = build(block(device, form, shape))
    if _sites is not None:
        _sites.append((form, shape, build, built))
    return built


@contextlib.contextmanager
def recording() -> Iterator[list[Site]]:
    """The tunable launches built inside the block, as Sites."""
    global _sites
    outer, _sites = _sites, []
    try:
        yield _sites
    finally:
        _sites = outer


def seconds(device: Device, run: Callable[[], object], calls: int = 5) -> float:
    """Seconds per run of `calls` runs back to back of `run` (a launch, or a training step),
    after a run untimed (the first launch after another kernel's runs slower on PoCL)."""
    run()
    device.queue.finish()
    start = time.perf_counter()
    for _ in range(calls):
        run()
    device.queue.finish()
    return (time.perf_counter() - start) / calls


@dataclass
class Tuned:
    """One launch shape's result: the untuned default block, the chosen one, and their median
    seconds per launch over the tuner's rounds."""
    form: str
    shape: Block
    default: Block
    best: Block
    default_s: float
    best_s: float


#: Seconds of timed launches per candidate in each of the tuner's rounds after the first
#: (which times one launch of each, its median setting the count): up to 5 launches back to
#: back, fewer where they take longer. With 5 always, `python -m grenade_py.tune` took 67 s
#: on its first run (31 s of it PoCL compiling the 98 kernels and work-group shapes timed,
#: 30 s timing) and 34 s warm; with this, 57 s and 18 s. The choices were as good: each
#: rule tuning one launch 6-8 times, taking turns, the blocks chosen took 1.026x (quiet) and
#: 1.055x (another process busy half the time) the fastest block's time at MNIST's 128 x 784 x
#: 512 forward (1 ms: 2 launches), against 1.043x and 1.047x; 1.006x against 1.000x at bn's
#: 5.7 ms kernel gradient at batch 256 (1 launch; 0.99 s a tuning, against 2.46).
TIMED_S = 0.002


#: The candidates of the lowest scores alone that `tune_sites` times again inside the training
#: step: in IN_STEP_ROUNDS rounds, IN_STEP_S of steps each. Alone, a launch reads operands its
#: own last run left in the caches; in the step, what the kernels before it left. On a 2-core
#: AVX-512 Xeon, pairs of tunings (one alone, one inside the step), their tables then training
#: MNIST's MLP taking turns (7 rounds), epochs inside over alone: 0.88 and 0.98 at batch 32,
#: 0.97 and 0.93 at 64, 0.99 and 1.00 at 128, 0.95 and 1.01 at 256. With about 2 ms of steps a
#: candidate, tunings alone had chosen the batch-64 forward in (64, 1) groups in two of three
#: runs (epochs 1.19-1.28x as long), but a cold tuning inside chose the weights' step there as
#: 6x1, 1.09x the epoch of the two passes it replaces. `python -m grenade_py.tune` took 40 s
#: there, warm, against 25 alone.
FINALISTS, IN_STEP_ROUNDS, IN_STEP_S = 3, 3, 0.01
#: Only launches taking at least this share of the step are timed inside it: timed as the
#: tuner does (3 steps), a step's time differs by a median 1-4% from one timing to the next
#: (MLP at batches 64 and 256, LeNet at 64), as much as any block changes a smaller launch's
#: share of it. On a 2-core AVX-512 Xeon, 47 of the MNIST networks' 104 launch shapes were
#: timed inside the step, and `python -m grenade_py.tune`'s first run took 49 s instead of 59
#: (27 s warm); 3 pairs of tunings with this and WIDE_LEAST and without either, their tables'
#: epochs taking turns, with over without: MLP 0.97-0.98 at batch 32, 0.88-1.18 at 64,
#: 0.99-1.04 at 128, 1.00-1.01 at 256; LeNet 1.01-1.03 at 64.
IN_STEP_SHARE = 0.02


def compile_part(device: Device, sites: list[Site], part: int, parts: int,
                 seen: set[tuple[str, Block]]) -> None:
    """Run once each candidate of `sites` (kernel and work-group shape) not in `seen`, the
    `part`-th of every `parts` in order of first appearance (adding each to `seen`), so that
    PoCL compiles its work-group function (one per kernel and shape, 0.1-1.2 s) and keeps it
    in its cache on disk: `python -m grenade_py.tune` compiles a CPU's candidates in one process
    per core, each its part, before timing any."""
    for form, _, build, _ in sites:
        for b in candidates(device, form):
            key = (kernel_name(form, b), local(form, b))
            if key in seen:
                continue
            seen.add(key)
            if len(seen) % parts == part:
                try:
                    build(b)()
                except DeviceError:  # more work-items than the kernel runs on this device
                    pass
    device.queue.finish()


def tune_sites(device: Device, sites: list[Site], repeats: int = 5, keep: bool = True,
               step: Callable[[], object] | None = None) -> list[Tuned]:
    """Time every block of each distinct (form, shape) among `sites` in `repeats` rounds, the
    candidates interleaved within each (one launch each in the first round, then up to
    TIMED_S of launches), and keep the one of the lowest median over the rounds of
    its time / the round's median time (the machine's noise, common to a round, divides out) in
    the device's table and the cache file (unless not `keep`); one Tuned per shape. With
    `step` (a training step that runs the sites' launches), the FINALISTS of the lowest such
    scores are scored again by `step`'s time, each in turn run by the step's launches of that
    form and shape (`Launch.adopt`), which keep the one chosen.

    Why not each candidate's fastest round: on a shared 2-core EPYC, where one launch's time
    varied 1.7-3.0 ms within a minute, a candidate that caught one quiet moment won. Over 4
    tunings of MLP 784-512-10's forward at batch 256, the fastest-round rule's choices took a
    median 2.11-2.55 ms (mean 2.31) in 21 later interleaved rounds; this rule's, from the same
    timings, 1.92-2.28 (mean 2.06)."""
    rows = []
    done: set[tuple[str, Block]] = set()
    step_s = seconds(device, step, 3) if step is not None else 0.0
    for form, shape, build, _ in sites:
        if (form, shape) in done:
            continue
        done.add((form, shape))
        launches = {}
        for b in candidates(device, form):
            try:
                launches[b] = build(b)
            except DeviceError:  # more work-items than the kernel runs on this device
                continue
        for run in launches.values():
            run()
        rounds = [{b: seconds(device, run, 1) for b, run in launches.items()}]
        calls = max(1, min(5, math.ceil(TIMED_S / statistics.median(rounds[0].values()))))
        rounds += [{b: seconds(device, run, calls) for b, run in launches.items()}
                   for _ in range(repeats - 1)]
        score = _scores(rounds)
        median = {b: statistics.median(r[b] for r in rounds) for b in launches}
        held = [built for f, s, _, built in sites if (f, s) == (form, shape)] if step else []
        if step is not None and min(median.values()) >= IN_STEP_SHARE * step_s:
            finalists = sorted(score, key=lambda b: score[b])[:FINALISTS]
            score = _scores(_in_step(device, held, {b: launches[b] for b in finalists}, step,
                                     min(repeats, IN_STEP_ROUNDS)))
        best = min(score, key=lambda b: score[b])
        for built in held:
            built.adopt(launches[best])
        if keep:
            table(device).setdefault(form, {})[key(shape)] = list(best)
        untuned = default(device, form, shape)
        rows.append(Tuned(form, shape, untuned, best, median.get(untuned, math.inf),
                          median[best]))
    if keep and (problem := save(device)) is not None:
        log.warning("the tuned blocks are used in this process but could not be kept: %s",
                    problem)
    return rows


def _scores(rounds: list[dict[Block, float]]) -> dict[Block, float]:
    """Each candidate's median over the rounds of its time / the round's median time."""
    return {b: statistics.median(r[b] / statistics.median(r.values()) for r in rounds)
            for b in rounds[0]}


def _in_step(device: Device, held: list[Launch], launches: dict[Block, Launch],
             step: Callable[[], object], repeats: int) -> list[dict[Block, float]]:
    """`repeats` rounds of `step`'s seconds with each candidate run by the launches `held`
    (taking turns in each round; a step untimed first, then as many as take about
    IN_STEP_S, at most 10)."""
    rounds: list[dict[Block, float]] = []
    for _ in range(repeats):
        times = {}
        for b, candidate in launches.items():
            for built in held:
                built.adopt(candidate)
            times[b] = seconds(device, step, max(1, min(10, math.ceil(
                IN_STEP_S / rounds[-1][b]))) if rounds else 1)
        rounds.append(times)
    return rounds


def save(device: Device) -> str | None:
    """Write the device's table into the cache file (other devices' entries kept); why it
    could not, or None."""
    records = _records()
    records[identity(device)] = table(device)
    path = record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        part.write_text(json.dumps(records, indent=1))
        part.replace(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    return None
