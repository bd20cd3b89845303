"""MiniFASNetV2 / MiniFASNetV1SE (minivision-ai Silent-Face-Anti-Spoofing, Apache-2.0) from a state dict.

Engine module: imports torch, so load it only inside worker processes. The layer names match the
published checkpoints (after stripping DataParallel's "module." prefix), so `load_state_dict(strict=True)`
succeeds; channel widths (the pruned "keep" lists) are read from the tensor shapes instead of being
copied as tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

INPUT_SIZE_PX = 80


class ConvBlock(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """Conv (no bias) -> BatchNorm -> PReLU (upstream `Conv_block`)."""

    def __init__(
        self, in_c: int, out_c: int, kernel: int, stride: int, padding: int, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(self.conv(x)))  # type: ignore[no-any-return]


class LinearBlock(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """Conv (no bias) -> BatchNorm, no activation (upstream `Linear_block`)."""

    def __init__(
        self, in_c: int, out_c: int, kernel: int, stride: int, padding: int, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))  # type: ignore[no-any-return]


class SEModule(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """Squeeze-and-excitation with BatchNorm after each 1x1 conv (upstream `SEModule`)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        w = self.sigmoid(self.bn2(self.fc2(self.relu(self.bn1(self.fc1(self.avg_pool(x)))))))
        return x * w


class DepthWise(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """1x1 expand -> 3x3 depthwise -> 1x1 project, optional residual and SE (upstream `Depth_Wise[_SE]`)."""

    def __init__(
        self, in_c: int, mid_c: int, out_c: int, stride: int, residual: bool, se_reduced: int = 0
    ) -> None:
        super().__init__()
        self.conv = ConvBlock(in_c, mid_c, kernel=1, stride=1, padding=0)
        self.conv_dw = ConvBlock(mid_c, mid_c, kernel=3, stride=stride, padding=1, groups=mid_c)
        self.project = LinearBlock(mid_c, out_c, kernel=1, stride=1, padding=0)
        self.residual = residual
        self.se_module = SEModule(out_c, se_reduced) if se_reduced else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Residual(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """A stack of residual DepthWise blocks (upstream `Residual` / `ResidualSE`)."""

    def __init__(self, blocks: list[DepthWise]) -> None:
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # type: ignore[no-any-return]


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in sd[key].shape)


def _depth_wise(sd: Mapping[str, Tensor], prefix: str, stride: int, residual: bool) -> DepthWise:
    mid_c, in_c = _shape(sd, f"{prefix}.conv.conv.weight")[:2]
    out_c = _shape(sd, f"{prefix}.project.conv.weight")[0]
    se_key = f"{prefix}.se_module.fc1.weight"
    se_reduced = _shape(sd, se_key)[0] if se_key in sd else 0
    return DepthWise(in_c, mid_c, out_c, stride=stride, residual=residual, se_reduced=se_reduced)


def _residual(sd: Mapping[str, Tensor], prefix: str) -> Residual:
    count = len({k.split(".")[2] for k in sd if k.startswith(f"{prefix}.model.")})
    return Residual([_depth_wise(sd, f"{prefix}.model.{i}", stride=1, residual=True) for i in range(count)])


class MiniFASNet(nn.Module):  # type: ignore[misc]  # torch is untyped here (mypy ratchet)
    """MiniFASNet for an 80x80 BGR crop in 0..255 (not normalised); returns (N, 3) logits, class 1 = live."""

    def __init__(self, sd: Mapping[str, Tensor]) -> None:
        super().__init__()
        c0 = _shape(sd, "conv1.conv.weight")[0]
        c1 = _shape(sd, "conv2_dw.conv.weight")[0]
        self.conv1 = ConvBlock(3, c0, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(c0, c1, kernel=3, stride=1, padding=1, groups=c1)
        self.conv_23 = _depth_wise(sd, "conv_23", stride=2, residual=False)
        self.conv_3 = _residual(sd, "conv_3")
        self.conv_34 = _depth_wise(sd, "conv_34", stride=2, residual=False)
        self.conv_4 = _residual(sd, "conv_4")
        self.conv_45 = _depth_wise(sd, "conv_45", stride=2, residual=False)
        self.conv_5 = _residual(sd, "conv_5")
        sep_out, sep_in = _shape(sd, "conv_6_sep.conv.weight")[:2]
        dw_kernel = _shape(sd, "conv_6_dw.conv.weight")[2]
        self.conv_6_sep = ConvBlock(sep_in, sep_out, kernel=1, stride=1, padding=0)
        self.conv_6_dw = LinearBlock(sep_out, sep_out, kernel=dw_kernel, stride=1, padding=0, groups=sep_out)
        emb, flat = _shape(sd, "linear.weight")
        self.linear = nn.Linear(flat, emb, bias=False)
        self.bn = nn.BatchNorm1d(emb)
        self.drop = nn.Dropout(p=0.0)
        self.prob = nn.Linear(emb, _shape(sd, "prob.weight")[0], bias=False)

    def forward(self, x: Tensor) -> Tensor:
        for stage in (
            self.conv1,
            self.conv2_dw,
            self.conv_23,
            self.conv_3,
            self.conv_34,
            self.conv_4,
            self.conv_45,
            self.conv_5,
            self.conv_6_sep,
            self.conv_6_dw,
        ):
            x = stage(x)
        x = torch.flatten(x, 1)
        return self.prob(self.drop(self.bn(self.linear(x))))  # type: ignore[no-any-return]


def load_minifasnet(path: Path) -> MiniFASNet:
    """Build a MiniFASNet from a verified checkpoint file and load it strictly, in eval mode."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    net = MiniFASNet(sd)
    net.load_state_dict(sd, strict=True)
    net.eval()
    return net
