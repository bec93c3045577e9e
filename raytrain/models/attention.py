"""The attention blocks of YOLO11 and YOLO26 — multi-head self-attention over a feature map (``Attention``), the
attention + feed-forward block (``PSABlock``), the CSP block that stacks them (``C2PSA``) — and ``C3k2``, the C2f
variant whose YOLO26 form holds a PSABlock.

Attribute names (``qkv``, ``proj``, ``pe``, ``attn``, ``ffn``, ``cv1``, ``cv2``, ``m``) follow Ultralytics, so
state_dict keys match theirs and weights convert key for key.
"""

from __future__ import annotations

import torch
from torch import nn

from raytrain.models.blocks import C3, Bottleneck, C2f, Conv


class Attention(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions of a map, with a depthwise positional term.

    One 1x1 conv (``qkv``) makes, per head, ``key_dim`` query and ``key_dim`` key channels and ``head_dim`` value
    channels, laid out head after head as ``[q | k | v]``; ``key_dim = head_dim * attn_ratio`` keeps the q/k
    projection cheap. The output adds a depthwise 3x3 conv of the values (``pe``, the positional encoding) to the
    attention output before the 1x1 projection.

    Args:
        dim: channels in and out (a multiple of ``num_heads``).
        num_heads: attention heads.
        attn_ratio: ``key_dim / head_dim``.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, dim, H, W)."""
        b, c, h, w = x.shape
        per_head = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = per_head.split((self.key_dim, self.key_dim, self.head_dim), dim=2)  # (B, heads, d, N) each
        weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, heads, N, N): query row, key col
        attended = (v @ weights.transpose(-2, -1)).view(b, c, h, w)
        return self.proj(attended + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """Attention then a 1x1 feed-forward (``c -> 2c -> c``), each with a residual when ``shortcut``.

    Args:
        c: channels in and out.
        attn_ratio: ``key_dim / head_dim`` of the attention.
        num_heads: attention heads.
        shortcut: residual connections.
    """

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True) -> None:
        super().__init__()
        self.attn = Attention(c, num_heads=num_heads, attn_ratio=attn_ratio)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, c, H, W)."""
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """CSP block of ``n`` PSABlocks: split into two halves, attend on one, concatenate, fuse (YOLO11's layer 10).

    Args:
        c1: input channels.
        c2: output channels (must equal ``c1``).
        n: number of PSABlocks.
        e: hidden channels as a fraction of ``c1``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps its width: c1={c1} != c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c1, H, W) -> (B, c1, H, W)."""
        kept, attended = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((kept, self.m(attended)), dim=1))


def make_c3k(c: int, shortcut: bool = True) -> C3:
    """YOLO11's C3k: a C3 of two 3x3 Bottlenecks, ``c`` channels in and out."""
    return C3(c, c, 2, shortcut, e=0.5, k=3)


class C3k2(C2f):
    """YOLO11/YOLO26's C2f variant: the same split-chain-concatenate, with a choice of inner block.

    Each of the ``n`` inner blocks is a Bottleneck (hidden ``c / 2``, residual), a :func:`make_c3k` (``c3k=True``), or a
    Bottleneck followed by an attention block (``attn=True``, YOLO26's last neck stage).

    Args:
        c1: input channels.
        c2: output channels.
        n: number of inner blocks.
        c3k: C3k inner blocks instead of Bottlenecks.
        e: ``c`` as a fraction of ``c2``.
        attn: Bottleneck + PSABlock inner blocks.
        shortcut: residual connections inside the inner blocks.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, attn: bool = False,
                 shortcut: bool = True) -> None:
        super().__init__(c1, c2, n, shortcut, e)
        def inner() -> nn.Module:
            if attn:
                return nn.Sequential(Bottleneck(self.c, self.c, shortcut),
                                     PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)))
            return make_c3k(self.c, shortcut) if c3k else Bottleneck(self.c, self.c, shortcut)

        self.m = nn.ModuleList(inner() for _ in range(n))
