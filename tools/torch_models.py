"""Classic genomics architectures in PyTorch, seeded, exported to ONNX for yuzu-onnx.

Torch is an optional dependency of yuzu-onnx: only this tool (and
``tools/export_test_models.py``, which uses it) imports it. The models have the published
layer sizes and a seeded random initialisation (``torch.manual_seed``); batch-norm
running statistics are calibrated on random one-hot sequences so that activations stay
of order one, as in a trained network. Every module is returned in eval mode.

Usage::

    python tools/torch_models.py basset -o basset.onnx --seq-len 1000 --exporter dynamo
    python tools/torch_models.py --list

``export`` checks the written file with ONNX Runtime against the torch outputs (batch
sizes 1 and 3) and raises when they disagree.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from yuzu_onnx.encoding import random_one_hot

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised only without torch
    sys.exit("tools/torch_models.py needs PyTorch: pip install torch (CPU wheels are enough)")

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
INPUT_NAME = "x"


# --------------------------------------------------------------------------------------
# Architectures.


def _same(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 conv with an odd kernel."""
    return dilation * (kernel - 1) // 2


class ToyNet(nn.Module):
    """Three 11-wide convolutions with ReLU and max-pooling, then a dense layer.

    ``conv(4→64, 11) → ReLU → conv(64→64, 11) → ReLU → MaxPool(2) → conv(64→64, 11) →
    ReLU → MaxPool(2) → Flatten → Linear(64·L/4 → 10)``.
    """

    output_names = ("y",)

    def __init__(
        self, *, seq_len: int = 1000, n_filters: int = 64, kernel_size: int = 11, n_outputs: int = 10
    ) -> None:
        super().__init__()
        k, f = kernel_size, n_filters
        self.body = nn.Sequential(
            nn.Conv1d(4, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.Conv1d(f, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(f, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Flatten(),
        )
        self.fc = nn.Linear(f * (seq_len // 2 // 2), n_outputs)
        self.head_layers = (self.fc,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class YuzuToyNet(nn.Module):
    """The ToyNet of the Yuzu paper (Schreiber & Singh): a profile model, no dense head.

    ``conv(4→32, 7) → ReLU → conv(32→32, 7) → ReLU → conv(32→2, 7)``, same padding:
    output ``y`` ``(N, 2, L)``, a 2-channel profile over every position (receptive field 19).
    """

    output_names = ("y",)

    def __init__(self, *, seq_len: int = 1000, n_filters: int = 32, kernel_size: int = 7, n_outputs: int = 2) -> None:
        super().__init__()
        k, f = kernel_size, n_filters
        self.body = nn.Sequential(
            nn.Conv1d(4, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.Conv1d(f, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.Conv1d(f, n_outputs, k, padding=_same(k)),
        )
        self.head_layers = (self.body[-1],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, k, padding=_same(k)), nn.BatchNorm1d(c_out), nn.ReLU()]


class Basset(nn.Module):
    """Basset (Kelley et al. 2016).

    ``(conv 300×19, BN, ReLU, MaxPool 3) → (conv 200×11, BN, ReLU, MaxPool 4) →
    (conv 200×7, BN, ReLU, MaxPool 4) → x.view(N, -1) → FC 1000 → ReLU → FC 1000 → ReLU →
    FC 164 → Sigmoid``. Convolutions are length-preserving; the flattened size is
    ``200 · (L // 3 // 4 // 4)`` (2400 for ``L = 600``, 4000 for ``L = 1000``).
    """

    output_names = ("y",)

    def __init__(
        self,
        *,
        seq_len: int = 600,
        channels: Sequence[int] = (300, 200, 200),
        kernels: Sequence[int] = (19, 11, 7),
        pools: Sequence[int] = (3, 4, 4),
        hidden: Sequence[int] = (1000, 1000),
        n_outputs: int = 164,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, length = 4, seq_len
        for c, k, p in zip(channels, kernels, pools, strict=True):
            layers += [*_conv_bn_relu(c_in, c, k), nn.MaxPool1d(p)]
            c_in, length = c, length // p
        self.body = nn.Sequential(*layers)
        self.head = _dense_head(c_in * length, hidden, n_outputs)
        self.head_layers = (self.head[-2],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return self.head(x.view(x.size(0), -1))


def _dense_head(n_in: int, hidden: Sequence[int], n_outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_outputs), nn.Sigmoid())


class FactorizedBasset(nn.Module):
    """Factorized Basset (Wnuk et al. 2019, as benchmarked by Yuzu).

    The 19-wide first conv becomes ``48×3, 64×3, 100×3, 150×7, 300×7`` (each with BN and
    ReLU) → MaxPool 3; the 11-wide second conv becomes ``200×7, 200×3, 200×3`` → MaxPool 4;
    then ``200×7`` → MaxPool 4 and the Basset dense head (FC 1000, FC 1000, FC 164, sigmoid).
    """

    output_names = ("y",)

    def __init__(
        self,
        *,
        seq_len: int = 600,
        blocks: Sequence[Sequence[tuple[int, int]]] = (
            ((48, 3), (64, 3), (100, 3), (150, 7), (300, 7)),
            ((200, 7), (200, 3), (200, 3)),
            ((200, 7),),
        ),
        pools: Sequence[int] = (3, 4, 4),
        hidden: Sequence[int] = (1000, 1000),
        n_outputs: int = 164,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, length = 4, seq_len
        for block, p in zip(blocks, pools, strict=True):
            for c, k in block:
                layers += _conv_bn_relu(c_in, c, k)
                c_in = c
            layers.append(nn.MaxPool1d(p))
            length //= p
        self.body = nn.Sequential(*layers)
        self.head = _dense_head(c_in * length, hidden, n_outputs)
        self.head_layers = (self.head[-2],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return self.head(x.view(x.size(0), -1))


class DeepSEA(nn.Module):
    """DeepSEA (Zhou & Troyanskaya 2015), valid (unpadded) convolutions.

    ``conv 320×8 → ReLU → MaxPool 4 → conv 480×8 → ReLU → MaxPool 4 → conv 960×8 → ReLU →
    x.view(N, -1) → FC 925 → ReLU → FC 919 → Sigmoid``; for ``L = 1000`` the flattened
    size is ``960 · 53 = 50880``.
    """

    output_names = ("y",)

    def __init__(
        self,
        *,
        seq_len: int = 1000,
        channels: Sequence[int] = (320, 480, 960),
        kernel_size: int = 8,
        pool: int = 4,
        hidden: int = 925,
        n_outputs: int = 919,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        k = kernel_size
        self.body = nn.Sequential(
            nn.Conv1d(4, c1, k),
            nn.ReLU(),
            nn.MaxPool1d(pool),
            nn.Conv1d(c1, c2, k),
            nn.ReLU(),
            nn.MaxPool1d(pool),
            nn.Conv1d(c2, c3, k),
            nn.ReLU(),
        )
        length = ((seq_len - k + 1) // pool - k + 1) // pool - k + 1
        if length < 1:
            raise ValueError(f"seq_len={seq_len} is too short for DeepSEA")
        self.head = _dense_head(c3 * length, (hidden,), n_outputs)
        self.head_layers = (self.head[-2],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return self.head(x.view(x.size(0), -1))


class BPNet(nn.Module):
    """BPNet (Avsec et al. 2021) with a profile and a counts head.

    ``conv n_filters×21 → ReLU``, then ``n_dilated`` residual layers
    ``x = x + ReLU(conv_k3_dilation_2^i(x))`` (``i = 1..n_dilated``, length-preserving),
    a profile head ``conv n_filters→n_tasks, 75`` and a counts head
    ``Linear(GAP(x))``. With ``out_len`` set (ChromBPNet/bpnet-lite style) the profile is
    cropped to the central ``out_len`` positions and the counts head pools the tower
    cropped the same way.

    ``count_pad`` widens the counts head's crop by that many positions on each side
    (bpnet-lite pools ``[start - 37, end + 37)``, half the profile kernel), and ``n_counts``
    sets the counts head's width (default ``n_tasks``; bpnet-lite has one count).

    Outputs: ``profile`` ``(N, n_tasks, out_len or L)`` and ``counts`` ``(N, n_counts)``.
    """

    output_names = ("profile", "counts")

    def __init__(
        self,
        *,
        seq_len: int = 1000,
        n_filters: int = 64,
        n_dilated: int = 3,
        n_tasks: int = 2,
        first_kernel: int = 21,
        profile_kernel: int = 75,
        out_len: int | None = None,
        count_pad: int = 0,
        n_counts: int | None = None,
    ) -> None:
        super().__init__()
        f = n_filters
        self.iconv = nn.Conv1d(4, f, first_kernel, padding=_same(first_kernel))
        self.rconvs = nn.ModuleList(
            nn.Conv1d(f, f, 3, padding=2**i, dilation=2**i) for i in range(1, n_dilated + 1)
        )
        self.fconv = nn.Conv1d(f, n_tasks, profile_kernel, padding=_same(profile_kernel))
        self.linear = nn.Linear(f, n_tasks if n_counts is None else n_counts)
        if out_len is not None and not 0 < out_len <= seq_len:
            raise ValueError(f"out_len must be in [1, seq_len={seq_len}], got {out_len}")
        self.trim = 0 if out_len is None else (seq_len - out_len) // 2
        self.out_len = seq_len if out_len is None else out_len
        self.count_pad = count_pad
        self.head_layers = (self.fconv, self.linear)
        self.residual_layers = tuple(self.rconvs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.iconv(x))
        for conv in self.rconvs:
            x = x + torch.relu(conv(x))
        start, end = self.trim, self.trim + self.out_len
        profile = self.fconv(x)
        if self.trim:
            profile = profile[:, :, start:end]
            x = x[:, :, max(start - self.count_pad, 0) : end + self.count_pad]
        counts = self.linear(x.mean(dim=2))
        return profile, counts


class ChromBPNet(nn.Module):
    """ChromBPNet (Pampari et al. 2024) in the form of bpnet-lite's ``ChromBPNet``.

    Two bpnet-lite ``BPNet`` models without control tracks on the same input: the
    accessibility model (``n_filters`` 512, ``n_layers`` 8: dilations 2..256) and the
    Tn5 bias model (128 filters, 4 layers), each with a one-track profile head (conv 75,
    cropped to the central ``out_len`` positions) and one count (``Linear`` on the mean of
    the tower over the central ``out_len + 2·37`` positions).

    Outputs: ``profile`` ``(N, 1, out_len)``, the sum of the two profile logits, and
    ``counts`` ``(N, 1)``, ``log(exp(acc) + exp(bias))`` of the two counts.
    """

    output_names = ("profile", "counts")

    def __init__(
        self,
        *,
        seq_len: int = 2114,
        out_len: int = 1000,
        n_filters: int = 512,
        n_layers: int = 8,
        bias_filters: int = 128,
        bias_layers: int = 4,
    ) -> None:
        super().__init__()
        common = {"seq_len": seq_len, "out_len": out_len, "n_tasks": 1, "n_counts": 1, "count_pad": 37}
        self.accessibility = BPNet(n_filters=n_filters, n_dilated=n_layers, **common)
        self.bias = BPNet(n_filters=bias_filters, n_dilated=bias_layers, **common)
        self.head_layers = (*self.accessibility.head_layers, *self.bias.head_layers)
        self.residual_layers = (*self.accessibility.residual_layers, *self.bias.residual_layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acc_profile, acc_counts = self.accessibility(x)
        bias_profile, bias_counts = self.bias(x)
        return acc_profile + bias_profile, torch.log(torch.exp(acc_counts) + torch.exp(bias_counts))


class _SpliceResidualUnit(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = _same(kernel, dilation)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation)
        self.bn2 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(h)))


SPLICEAI_10K_UNITS = ((11, 1),) * 4 + ((11, 4),) * 4 + ((21, 10),) * 4 + ((41, 25),) * 4


class SpliceAI(nn.Module):
    """SpliceAI-10k-like residual dilated network (Jaganathan et al. 2019).

    ``conv 1×1 (4→C)``; 16 residual units (BN → ReLU → conv → BN → ReLU → conv, plus the
    skip) with (kernel, dilation) ``(11, 1)×4, (11, 4)×4, (21, 10)×4, (41, 25)×4``; every
    four units a ``1×1`` conv adds into a skip sum; a final ``1×1`` conv to 3 classes,
    cropped by ``context/2`` on each side, softmax over the classes. The receptive field is
    ``context + 1 = 10 001``; output ``(N, 3, L - context)``.
    """

    output_names = ("y",)

    def __init__(
        self,
        *,
        seq_len: int = 11000,
        channels: int = 32,
        units: Sequence[tuple[int, int]] = SPLICEAI_10K_UNITS,
        group: int = 4,
        n_outputs: int = 3,
    ) -> None:
        super().__init__()
        context = sum(2 * (k - 1) * d for k, d in units)
        if seq_len <= context:
            raise ValueError(f"seq_len={seq_len} must exceed the context {context}")
        self.crop = context // 2
        self.group = group
        self.conv_in = nn.Conv1d(4, channels, 1)
        self.skip_in = nn.Conv1d(channels, channels, 1)
        self.units = nn.ModuleList(_SpliceResidualUnit(channels, k, d) for k, d in units)
        self.skips = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(len(units) // group))
        self.conv_out = nn.Conv1d(channels, n_outputs, 1)
        self.head_layers = (self.conv_out,)
        self.residual_layers = (self.skip_in, *self.skips, *(u.conv2 for u in self.units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        skip = self.skip_in(x)
        for i, unit in enumerate(self.units):
            x = unit(x)
            if (i + 1) % self.group == 0:
                skip = skip + self.skips[i // self.group](x)
        y = self.conv_out(skip)[:, :, self.crop : -self.crop]
        return torch.softmax(y, dim=1)


class _AttentionPool(nn.Module):
    """Enformer's attention pooling (``enformer-pytorch``): blocks of ``pool_size``
    neighbouring positions, ``Σ softmax(W·x)·x`` over each block, the logits from a 1×1
    ``Conv2d`` initialised to twice the identity."""

    def __init__(self, dim: int, pool_size: int = 2) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.to_attn_logits = nn.Conv2d(dim, dim, 1, bias=False)
        nn.init.dirac_(self.to_attn_logits.weight)
        with torch.no_grad():
            self.to_attn_logits.weight.mul_(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, n = x.shape
        x = x.view(b, d, n // self.pool_size, self.pool_size)
        attn = self.to_attn_logits(x).softmax(dim=-1)
        return (x * attn).sum(dim=-1)


class _ConvBlock(nn.Sequential):
    """Enformer's ``ConvBlock``: BatchNorm → GELU → Conv1d (length kept)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1) -> None:
        super().__init__(nn.BatchNorm1d(c_in), nn.GELU(), nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2))


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class _SelfAttention(nn.Module):
    """Multi-head self-attention over positions, ``(N, n, dim)`` in and out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (f(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for f in (self.to_q, self.to_k, self.to_v))
        attn = (q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, d))


class EnformerLike(nn.Module):
    """A reduced Enformer (Avsec et al. 2021; the layout of ``enformer-pytorch``).

    Stem ``Conv1d(4→dim/2, 15)`` + residual 1×1 ``ConvBlock`` + attention pooling; a tower
    of ``n_tower`` blocks (``ConvBlock`` k5 with channels growing geometrically to ``dim``
    + residual 1×1 ``ConvBlock`` + attention pooling), so one bin per ``2^(n_tower+1)``
    positions; a learned absolute positional embedding (instead of Enformer's relative
    positional features, which no ONNX exporter handles: ``aten::xlogy``) and ``depth``
    transformer layers (pre-LayerNorm multi-head attention and feed-forward, residual);
    the central ``target_length`` bins; a pointwise ``ConvBlock(dim→2·dim)`` + GELU; two
    heads ``Linear → Softplus`` with Enformer's track counts.

    Outputs: ``human`` ``(N, target_length, 5313)`` and ``mouse`` ``(N, target_length, 1643)``.
    """

    output_names = ("human", "mouse")

    def __init__(
        self,
        *,
        seq_len: int = 2048,
        dim: int = 192,
        n_tower: int = 4,
        depth: int = 2,
        heads: int = 4,
        target_length: int = 32,
        n_human: int = 5313,
        n_mouse: int = 1643,
    ) -> None:
        super().__init__()
        bins = seq_len // 2 ** (n_tower + 1)
        if seq_len % 2 ** (n_tower + 1) or not 0 < target_length <= bins:
            raise ValueError(
                f"seq_len={seq_len} must be a multiple of {2 ** (n_tower + 1)} with at least "
                f"target_length={target_length} bins"
            )
        half = dim // 2
        self.stem = nn.Sequential(
            nn.Conv1d(4, half, 15, padding=7), _Residual(_ConvBlock(half, half)), _AttentionPool(half)
        )
        ratio = (dim / half) ** (1 / max(n_tower - 1, 1))
        filters = [half] + [int(round(half * ratio**i / 16)) * 16 for i in range(n_tower)]
        filters[-1] = dim
        self.tower = nn.Sequential(*[
            nn.Sequential(_ConvBlock(c_in, c_out, 5), _Residual(_ConvBlock(c_out, c_out)), _AttentionPool(c_out))
            for c_in, c_out in zip(filters[:-1], filters[1:])
        ])
        self.positions = nn.Parameter(0.1 * torch.randn(1, bins, dim))
        layers = []
        for _ in range(depth):
            layers.append(_Residual(nn.Sequential(nn.LayerNorm(dim), _SelfAttention(dim, heads))))
            layers.append(_Residual(nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)
            )))
        self.transformer = nn.Sequential(*layers)
        self.trim = (bins - target_length) // 2
        self.target_length = target_length
        self.final = _ConvBlock(dim, 2 * dim)
        self.human = nn.Linear(2 * dim, n_human)
        self.mouse = nn.Linear(2 * dim, n_mouse)
        self.head_layers = (self.human, self.mouse)
        self.residual_layers = tuple(m for m in self.modules() if isinstance(m, nn.Linear) and m.out_features == dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tower(self.stem(x))
        x = self.transformer(x.transpose(1, 2) + self.positions)
        x = x[:, self.trim : self.trim + self.target_length]
        x = nn.functional.gelu(self.final(x.transpose(1, 2))).transpose(1, 2)
        return nn.functional.softplus(self.human(x)), nn.functional.softplus(self.mouse(x))


class _BorzoiConvBlock(nn.Sequential):
    """Borzoi's ``ConvBlock``: BatchNorm → GELU (tanh approximation) → Conv1d (length kept)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1) -> None:
        super().__init__(nn.BatchNorm1d(c_in, eps=1e-3), nn.GELU(approximate="tanh"),
                         nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2))


class _SeparableConv(nn.Sequential):
    """Borzoi's separable ``ConvBlock``: depthwise conv (no bias) → pointwise 1×1 conv."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__(nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False),
                         nn.Conv1d(dim, dim, 1))


class BorzoiLike(nn.Module):
    """A reduced Borzoi (Linder et al. 2025; the layout of ``borzoi-pytorch``).

    Borzoi's layers at half its channel widths and 1/32 of its input (16,384 instead of
    524,288 positions): ``Conv1d(4→stem, 15)`` + MaxPool 2; a tower of five ``ConvBlock``
    k5 (BatchNorm → GELU → conv) with a MaxPool 2 between them (32-bp bins, ``x_unet0``);
    MaxPool 2 + ``ConvBlock`` k5 to ``dim`` (64 bp, ``x_unet1``); MaxPool 2 (128 bp); a
    learned absolute positional embedding (instead of Borzoi's relative positions) and
    ``depth`` transformer layers (pre-LayerNorm attention and MLP, residual); the U-net:
    ``ConvBlock`` 1×1 + nearest upsampling ×2, plus ``ConvBlock`` 1×1 of ``x_unet1``, a
    separable conv, the same again to 32 bp with ``x_unet0``; the central
    ``target_length`` bins (192 of 512: Borzoi's 6144 of 16384); ``ConvBlock`` 1×1 to
    ``final`` + GELU; the human head ``Conv1d(final → 7611, 1)`` + Softplus.

    Output: ``human`` ``(N, 7611, target_length)``.
    """

    output_names = ("human",)

    def __init__(
        self,
        *,
        seq_len: int = 16384,
        stem: int = 256,
        tower: Sequence[int] = (304, 368, 448, 528, 640),
        dim: int = 768,
        depth: int = 2,
        heads: int = 8,
        final: int = 960,
        target_length: int = 192,
        n_human: int = 7611,
    ) -> None:
        super().__init__()
        if len(tower) != 5:
            raise ValueError(f"tower must have 5 widths (Borzoi's), got {len(tower)}")
        bins = seq_len // 32
        if seq_len % 128 or not 0 < target_length <= bins:
            raise ValueError(f"seq_len={seq_len} must be a multiple of 128 with at least "
                             f"target_length={target_length} bins of 32")
        self.conv_dna = nn.Sequential(nn.Conv1d(4, stem, 15, padding=7), nn.MaxPool1d(2))
        layers: list[nn.Module] = []
        c_in = stem
        for i, c in enumerate(tower):
            layers += [nn.MaxPool1d(2)] if i else []
            layers.append(_BorzoiConvBlock(c_in, c, 5))
            c_in = c
        self.res_tower = nn.Sequential(*layers)
        self.unet1 = nn.Sequential(nn.MaxPool1d(2), _BorzoiConvBlock(c_in, dim, 5))
        self.pool = nn.MaxPool1d(2)
        self.positions = nn.Parameter(0.1 * torch.randn(1, seq_len // 128, dim))
        blocks = []
        for _ in range(depth):
            blocks.append(_Residual(nn.Sequential(nn.LayerNorm(dim, eps=1e-3), _SelfAttention(dim, heads))))
            blocks.append(_Residual(nn.Sequential(
                nn.LayerNorm(dim, eps=1e-3), nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)
            )))
        self.transformer = nn.Sequential(*blocks)
        self.horizontal_conv0 = _BorzoiConvBlock(c_in, dim)
        self.horizontal_conv1 = _BorzoiConvBlock(dim, dim)
        self.upsampling_unet1 = nn.Sequential(_BorzoiConvBlock(dim, dim), nn.Upsample(scale_factor=2))
        self.separable1 = _SeparableConv(dim)
        self.upsampling_unet0 = nn.Sequential(_BorzoiConvBlock(dim, dim), nn.Upsample(scale_factor=2))
        self.separable0 = _SeparableConv(dim)
        self.trim = (bins - target_length) // 2
        self.target_length = target_length
        self.final_joined_convs = nn.Sequential(_BorzoiConvBlock(dim, final), nn.GELU(approximate="tanh"))
        self.human_head = nn.Conv1d(final, n_human, 1)
        self.head_layers = (self.human_head,)
        self.residual_layers = tuple(m for m in self.transformer.modules()
                                     if isinstance(m, nn.Linear) and m.out_features == dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_unet0 = self.res_tower(self.conv_dna(x))
        x_unet1 = self.unet1(x_unet0)
        x = self.pool(x_unet1)
        x_unet1 = self.horizontal_conv1(x_unet1)
        x_unet0 = self.horizontal_conv0(x_unet0)
        x = self.transformer(x.transpose(1, 2) + self.positions).transpose(1, 2)
        x = self.separable1(self.upsampling_unet1(x) + x_unet1)
        x = self.separable0(self.upsampling_unet0(x) + x_unet0)
        x = x[:, :, self.trim : self.trim + self.target_length]
        return nn.functional.softplus(self.human_head(self.final_joined_convs(x)))


class _BasenjiConvBlock(nn.Sequential):
    """Basenji's ``conv_block``: GELU → Conv1d (no bias, same padding) → BatchNorm [→ MaxPool 2]."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, *, dilation: int = 1, pool: bool = False) -> None:
        layers: list[nn.Module] = [nn.GELU(), nn.Conv1d(c_in, c_out, kernel, padding=_same(kernel, dilation),
                                                        dilation=dilation, bias=False),
                                   nn.BatchNorm1d(c_out, eps=1e-3)]
        super().__init__(*layers, *([nn.MaxPool1d(2)] if pool else []))


def basenji_dilations(n: int, rate_mult: float = 1.5) -> list[int]:
    """Basenji's dilation schedule: ×``rate_mult`` per block, rounded half to even
    (1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72 for 11 blocks)."""
    rates, rate = [], 1.0
    for _ in range(n):
        rates.append(int(np.round(rate)))
        rate = float(np.round(rate * rate_mult))
    return rates


class Basenji2Like(nn.Module):
    """Basenji2 (Kelley 2020; the layout of ``basenji2-pytorch``) at a reduced length.

    Basenji2's layers and widths, 32,768 instead of 131,072 input positions:
    ``conv_block(4→288, 15)`` + MaxPool 2; a tower of six ``conv_block`` k5 + MaxPool 2
    (339 filters, ×1.1776 per block, to 768; 128-bp bins); eleven dilated residual blocks
    ``x + BN(conv1×1(GELU(BN(conv_k3_dilation_d(GELU(x))))))`` with 384 inner channels
    and dilations 1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72; ``crop`` bins cut on each side
    (16 of 256, Basenji2's 64 of 1024); ``conv_block(→1536, 1)``, GELU; the human head
    ``Linear(1536 → 5313)`` + Softplus on every bin.

    Output: ``human`` ``(N, bins - 2·crop, 5313)`` (224 bins for 32,768).
    """

    output_names = ("human",)

    def __init__(
        self,
        *,
        seq_len: int = 32768,
        stem: int = 288,
        tower_init: int = 339,
        tower_mult: float = 1.1776,
        n_tower: int = 6,
        tower_end: int = 768,
        inner: int = 384,
        n_dilated: int = 11,
        crop: int = 16,
        final: int = 1536,
        n_human: int = 5313,
    ) -> None:
        super().__init__()
        bins = seq_len // 2 ** (n_tower + 1)
        if seq_len % 2 ** (n_tower + 1) or bins <= 2 * crop:
            raise ValueError(f"seq_len={seq_len} must be a multiple of {2 ** (n_tower + 1)} with more than "
                             f"2·crop={2 * crop} bins")
        layers: list[nn.Module] = [_BasenjiConvBlock(4, stem, 15, pool=True)]
        c_in, width = stem, float(tower_init)
        for i in range(n_tower):
            c = tower_end if i == n_tower - 1 else int(round(width))
            layers.append(_BasenjiConvBlock(c_in, c, 5, pool=True))
            c_in, width = c, width * tower_mult
        self.tower = nn.Sequential(*layers)
        self.dilated = nn.ModuleList(
            nn.Sequential(_BasenjiConvBlock(c_in, inner, 3, dilation=d), _BasenjiConvBlock(inner, c_in))
            for d in basenji_dilations(n_dilated)
        )
        self.crop = crop
        self.final = _BasenjiConvBlock(c_in, final)
        self.head = nn.Linear(final, n_human)
        self.head_layers = (self.head,)
        self.residual_layers = tuple(block[1][1] for block in self.dilated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tower(x)
        for block in self.dilated:
            x = x + block(x)
        x = nn.functional.gelu(self.final(x[:, :, self.crop : -self.crop]))
        return nn.functional.softplus(self.head(x.transpose(1, 2)))


# --------------------------------------------------------------------------------------
# Registry, seeded initialisation, export.

class ProteinCNN(nn.Module):
    """A protein sequence CNN (20-letter alphabet), where the first convolution is wide.

    ``conv(20→128, 15) → ReLU → MaxPool(2) → conv(128→128, 9) → ReLU → MaxPool(2) →
    conv(128→128, 9) → ReLU → mean over length → Linear(128 → 10)``.
    """

    output_names = ("y",)
    alphabet_size = 20

    def __init__(self, *, seq_len: int = 500, n_filters: int = 128, first_kernel: int = 15, kernel_size: int = 9,
                 n_outputs: int = 10) -> None:
        super().__init__()
        f, k = n_filters, kernel_size
        self.body = nn.Sequential(
            nn.Conv1d(self.alphabet_size, f, first_kernel, padding=_same(first_kernel)),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(f, f, k, padding=_same(k)),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(f, f, k, padding=_same(k)),
            nn.ReLU(),
        )
        self.fc = nn.Linear(f, n_outputs)
        self.head_layers = (self.fc,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(-1))


ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "toynet": (ToyNet, {"seq_len": 1000}),
    "yuzu_toynet": (YuzuToyNet, {"seq_len": 1000}),
    "basset": (Basset, {"seq_len": 600}),
    "factorized_basset": (FactorizedBasset, {"seq_len": 600}),
    "deepsea": (DeepSEA, {"seq_len": 1000}),
    "bpnet4": (BPNet, {"seq_len": 1000, "n_dilated": 3}),
    "bpnet9": (BPNet, {"seq_len": 2114, "n_dilated": 9, "out_len": 1000}),
    "spliceai10k": (SpliceAI, {"seq_len": 11000}),
    "protein_cnn": (ProteinCNN, {"seq_len": 500}),
    "enformer_like": (EnformerLike, {"seq_len": 2048}),
    "bpnet_lite": (BPNet, {"seq_len": 2114, "n_dilated": 8, "out_len": 1000, "count_pad": 37, "n_counts": 1}),
    "chrombpnet": (ChromBPNet, {"seq_len": 2114}),
    "splice10k": (SpliceAI, {"seq_len": 15000}),
    "borzoi_like": (BorzoiLike, {"seq_len": 16384}),
    "basenji2_like": (Basenji2Like, {"seq_len": 32768}),
}


def random_onehot(n: int, seq_len: int, *, seed: int = 0, alphabet_size: int = 4) -> np.ndarray:
    """Random one-hot sequences, shape ``(n, alphabet_size, seq_len)``, float32 (DNA by default)."""
    return random_one_hot(n, seq_len, alphabet_size=alphabet_size, layout="ncl", seed=seed)


def build(name: str, *, seed: int = 0, **kwargs) -> nn.Module:
    """Build architecture ``name`` with seeded weights, in eval mode.

    Parameters
    ----------
    name: one of :data:`ARCHITECTURES` (``toynet``, ``yuzu_toynet``, ``basset``, ``factorized_basset``,
        ``deepsea``, ``bpnet4``, ``bpnet9``, ``spliceai10k``, ``protein_cnn``, ``enformer_like``,
        ``bpnet_lite``, ``chrombpnet``, ``splice10k``, ``borzoi_like``, ``basenji2_like``).
    seed: ``torch.manual_seed`` for the weights, and the seed of the calibration batch.
    kwargs: architecture options overriding the published defaults (``seq_len``, channel
        counts, ...); see each class.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    cls, defaults = ARCHITECTURES[name]
    options = {**defaults, **kwargs}
    torch.manual_seed(seed)
    module = cls(**options)
    _init_weights(module)
    _calibrate_batch_norm(module, options["seq_len"], seed)
    return module.eval()


def _init_weights(module: nn.Module) -> None:
    """He-normal convs/linears, small random biases; heads and residual branches smaller."""
    heads = {id(m) for m in getattr(module, "head_layers", ())}
    residual = {id(m) for m in getattr(module, "residual_layers", ())}
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            fan_in = m.weight[0].numel()
            gain = 1.0 if id(m) in heads else 0.3 if id(m) in residual else 2.0
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(gain / fan_in))
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)


def _calibrate_batch_norm(module: nn.Module, seq_len: int, seed: int) -> None:
    """Give batch norms the statistics of random one-hot data, then random affine params."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(random_onehot(8, seq_len, seed=seed + 1, alphabet_size=_alphabet_size(module))))
        for m in norms:
            m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
            m.bias.copy_(0.1 * torch.randn_like(m.bias))
            m.momentum = 0.1
    module.eval()


def _alphabet_size(module: nn.Module) -> int:
    return int(getattr(module, "alphabet_size", 4))


def _output_names(module: nn.Module) -> list[str]:
    return list(getattr(module, "output_names", ("y",)))


def export(
    module: nn.Module,
    path: str | Path,
    *,
    seq_len: int,
    exporter: str = "torchscript",
    opset: int | None = None,
    verify: bool = True,
) -> Path:
    """Export ``module`` to ONNX with a dynamic batch axis and check it with ONNX Runtime.

    Parameters
    ----------
    module: a model taking ``(N, A, seq_len)`` one-hot input (``A = module.alphabet_size``, 4 by default).
    path: the ``.onnx`` file to write (weights inside the file).
    seq_len: the input length ``L`` (fixed in the exported graph).
    exporter: ``"torchscript"`` (``dynamo=False``, opset 17, ``dynamic_axes``) or
        ``"dynamo"`` (``dynamo=True``, opset 18, ``dynamic_shapes`` with
        ``torch.export.Dim``; needs ``onnxscript``).
    opset: override the exporter's default opset.
    verify: compare ONNX Runtime with torch on batches of 1 and 3 sequences.

    Returns
    -------
    Path of the written model.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opset = opset or DEFAULT_OPSET[exporter]
    module = module.eval()
    names = _output_names(module)
    example = (torch.from_numpy(random_onehot(2, seq_len, seed=11, alphabet_size=_alphabet_size(module))),)
    with torch.no_grad():
        if exporter == "torchscript":
            axes = {n: {0: "batch"} for n in (INPUT_NAME, *names)}
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes={INPUT_NAME: {0: batch}},
                external_data=False,
                optimize=True,
            )
            program.save(str(path), external_data=False)
    if verify:
        verify_export(module, path, seq_len=seq_len)
    return path


def verify_export(module: nn.Module, path: str | Path, *, seq_len: int, rtol: float = 1e-4) -> float:
    """Run the ONNX file and the module on the same batches; raise if they disagree.

    Returns the largest absolute difference, relative to the output scale.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for batch in (1, 3):
        x = random_onehot(batch, seq_len, seed=100 + batch, alphabet_size=_alphabet_size(module))
        with torch.no_grad():
            expected = module(torch.from_numpy(x))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(names, {session.get_inputs()[0].name: x})
        for name, e, g in zip(names, expected, got, strict=True):
            e = e.numpy()
            if e.shape != g.shape:
                raise AssertionError(f"{path}: output {name} has shape {g.shape}, torch gives {e.shape}")
            scale = max(float(np.abs(e).max()), 1e-12)
            err = float(np.abs(e - g).max()) / scale
            worst = max(worst, err)
            if err > rtol:
                raise AssertionError(
                    f"{path}: output {name} differs from torch by {err:.2e} of its scale (batch {batch})"
                )
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(ARCHITECTURES), help="architecture")
    parser.add_argument("-o", "--output", type=Path, help="the .onnx file to write")
    parser.add_argument("--seq-len", type=int, help="input length (default: the published one)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    parser.add_argument("--opset", type=int, help="default: 17 (torchscript), 18 (dynamo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the architectures and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (cls, defaults) in ARCHITECTURES.items():
            print(f"{name:18s} {cls.__name__:16s} {defaults}")
        return 0
    if args.name is None or args.output is None:
        parser.error("NAME and -o/--output are required (or --list)")
    kwargs = {} if args.seq_len is None else {"seq_len": args.seq_len}
    module = build(args.name, seed=args.seed, **kwargs)
    seq_len = args.seq_len or ARCHITECTURES[args.name][1]["seq_len"]
    path = export(module, args.output, seq_len=seq_len, exporter=args.exporter, opset=args.opset)
    n_params = sum(p.numel() for p in module.parameters())
    size = path.stat().st_size
    print(f"wrote {path} ({args.name}, L={seq_len}, {n_params:,} parameters, {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
