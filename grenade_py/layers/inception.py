"""Grenade's Inception blocks and Resnet, built from the layers they name. Ports
Grenade.Layers.Inception.

Each convolution is padded to keep rows and cols, so the blocks give D3 rows cols (sum of their
filters) on D3 rows cols channels; Grenade's extra type parameters (rows, cols) come from the
input shape here. Model files store them as the Concat, Merge and lists they are.
"""
from __future__ import annotations

from grenade_py.layers.base import Layer
from grenade_py.layers.branches import Concat, Merge, Trivial
from grenade_py.layers.convolution import Convolution
from grenade_py.layers.pad import Pad
from grenade_py.layers.series import Series


def padded_convolution(channels: int, filters: int, size: int) -> Series:
    """Grenade's Inception3x3/5x5/7x7: Pad (size // 2) all round, then a size x size stride-1
    Convolution from `channels` to `filters`."""
    edge = size // 2
    return Series([Pad(edge, edge, edge, edge), Convolution(channels, filters, size, size, 1, 1)])


def InceptionMini(channels: int, chx: int, chy: int) -> Concat:  # noqa: N802 - Grenade's name
    """3x3 and 5x5 padded convolutions side by side: channels -> chx + chy channels."""
    return Concat(padded_convolution(channels, chx, 3), padded_convolution(channels, chy, 5))


def Inception(channels: int, chx: int, chy: int, chz: int) -> Concat:  # noqa: N802
    """InceptionMini beside a 7x7 padded convolution: channels -> chx + chy + chz channels."""
    return Concat(InceptionMini(channels, chx, chy), padded_convolution(channels, chz, 7))


def Resnet(branch: Layer | list[Layer]) -> Merge:  # noqa: N802
    """The branch's output plus its input (Grenade's Resnet = Merge Trivial branch)."""
    return Merge(Trivial(), branch)
