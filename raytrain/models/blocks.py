"""Convolutional building blocks of the YOLO families: Conv-BN-SiLU, depthwise Conv, Bottleneck, C2f, C3,
SPPF, Concat, and Conv+BN folding for inference (the attention blocks and C3k2 are in
:mod:`raytrain.models.attention`).

Attribute names (``conv``, ``bn``, ``cv1``, ``cv2``, ``m``) follow Ultralytics, so state_dict keys match theirs and
converting weights is a straight key copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# YOLOv8's BatchNorm settings (Ultralytics sets these in initialize_weights); PyTorch's defaults are 1e-5 and 0.1.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, with 'same' padding for odd kernels.

    Args:
        c1: input channels.
        c2: output channels.
        k: kernel size.
        s: stride.
        g: groups.
        act: SiLU after the BatchNorm (False: none, as in the projections of attention blocks).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, padding=k // 2, groups=g, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H / s, W / s)."""
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (inference only: the BN parameters and statistics are gone)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing ``bn(conv(x))`` in eval mode (running statistics).

    With ``scale = gamma / sqrt(running_var + eps)``: ``W' = W * scale`` per output channel and
    ``b' = (b - running_mean) * scale + beta``.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)
    return fused


def depthwise_conv(c1: int, c2: int, k: int = 1) -> Conv:
    """A Conv whose groups are ``gcd(c1, c2)`` (depthwise when ``c1 == c2``), as in YOLO11's class branch."""
    return Conv(c1, c2, k, 1, g=math.gcd(c1, c2))


class Bottleneck(nn.Module):
    """Two ``k x k`` Convs with an optional residual (only when input and output channels match).

    Args:
        c1: input channels.
        c2: output channels.
        shortcut: add the input to the output when ``c1 == c2``.
        e: hidden channels as a fraction of ``c2``.
        k: kernel size of both convolutions.
    """

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, k: int = 3) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k, 1)
        self.cv2 = Conv(hidden, c2, k, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convolutions: split, a chain of ``n`` Bottlenecks, concatenate every stage, fuse.

    ``cv1`` makes ``2c`` channels split into two halves; each Bottleneck feeds on the previous output; all
    ``2 + n`` pieces of ``c`` channels are concatenated and ``cv2`` maps them to ``c2``.

    Args:
        c1: input channels.
        c2: output channels.
        n: number of Bottlenecks.
        shortcut: residual connections inside the Bottlenecks (True in the backbone, False in the neck).
        e: ``c`` as a fraction of ``c2``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        pieces = list(self.cv1(x).chunk(2, dim=1))
        for block in self.m:
            pieces.append(block(pieces[-1]))
        return self.cv2(torch.cat(pieces, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: ``n`` chained max-pools (3 pools of k=5 equal 5, 9 and 13 px windows).

    Args:
        c1: input channels.
        c2: output channels.
        k: max-pool kernel size.
        n: number of chained pools.
        shortcut: add the input to the output (when ``c1 == c2``), YOLO26's variant.
        act: SiLU after ``cv1`` (YOLO26's SPPF has none there).
    """

    def __init__(self, c1: int, c2: int, k: int = 5, n: int = 3, shortcut: bool = False, act: bool = True) -> None:
        super().__init__()
        hidden = c1 // 2
        self.n = n
        self.add = shortcut and c1 == c2
        self.cv1 = Conv(c1, hidden, 1, 1, act=act)
        self.cv2 = Conv(hidden * (n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        pieces = [self.cv1(x)]
        for _ in range(self.n):
            pieces.append(self.m(pieces[-1]))
        y = self.cv2(torch.cat(pieces, dim=1))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convolutions: one path through ``n`` Bottlenecks, one straight, concatenated and fused.

    Args:
        c1: input channels.
        c2: output channels.
        n: number of Bottlenecks.
        shortcut: residual connections inside the Bottlenecks.
        e: hidden channels as a fraction of ``c2``.
        k: kernel size of the Bottlenecks' convolutions.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5, k: int = 3) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, e=1.0, k=k) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c2, H, W)."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class Concat(nn.Module):
    """Concatenate a list of feature maps along the channel dimension."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """list of (B, Ci, H, W) -> (B, sum(Ci), H, W)."""
        return torch.cat(xs, dim=1)
