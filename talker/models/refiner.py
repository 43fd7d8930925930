"""The refiner: the speaker at ``scale`` × the decoder's resolution (256² from 64²).

A person-specific super-resolution network in the manner of EDSR (Lim et al., CVPRW 2017): a
residual trunk at the low resolution, then ×2 sub-pixel upsamplings (ESPCN, Shi et al., CVPR
2016), predicting what bicubic upscaling misses. It also sees a fixed high-resolution reference
frame of the speaker, folded to the low resolution by pixel-unshuffle (``scale``² pixels per
low-resolution position become channels), so that detail that does not move with speech (hair,
background, the eyes' shape) can be copied rather than invented.

With ``warp_reference`` it also moves that detail to where the frame has it: the trunk predicts a
flow (in low-resolution pixels, upsampled) and a mask; the reference, warped by the flow at the
output size (``grid_sample``, as in the warping of First Order Motion Model, Siarohin et al.,
NeurIPS 2019), gives its high frequencies (the warped reference minus its own area-and-bicubic
low-pass) where the mask allows: hair strands, the suit's seams and the eyes' lashes come from the
speaker's own photo at their moved place, while colours, shading and the mouth stay the decoder's.

It is trained on the speaker's own frames with the decoder's outputs as inputs (``talker train
refiner``), so that training and use see the same blur. Deterministic: no noise, one frame in,
one frame out (no flicker of its own).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


#: the cubic convolution kernel's parameter in PyTorch's bicubic interpolation (Keys' a)
CUBIC_A = -0.75


def _cubic(d: float) -> float:
    d = abs(d)
    if d <= 1:
        return ((CUBIC_A + 2) * d - (CUBIC_A + 3)) * d * d + 1
    return ((CUBIC_A * d - 5 * CUBIC_A) * d + 8 * CUBIC_A) * d - 4 * CUBIC_A if d < 2 else 0.0


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n: int, scale: int, mode: str, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(n·scale, n) float32 M such that M @ x upsamples the rows of x as ``F.interpolate(...,
    scale_factor=scale, mode=mode, align_corners=False)`` does, ``mode`` "bicubic" or "bilinear"
    (edges replicated): :func:`upsample` gives the same numbers as two matrix products, several
    times faster on a CPU for frames of the decoder's size."""
    m = torch.zeros(n * scale, n, dtype=torch.float64)
    for i in range(n * scale):
        src = (i + 0.5) / scale - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            k = math.floor(src)
            m[i, min(k, n - 1)] += 1 - (src - k)
            m[i, min(k + 1, n - 1)] += src - k
        else:
            k = math.floor(src)
            for j in range(-1, 3):
                m[i, min(max(k + j, 0), n - 1)] += _cubic(j - (src - k))
    return m.to(device, torch.float32)


def upsample(x: torch.Tensor, scale: int, mode: str = "bicubic") -> torch.Tensor:
    """(..., h, w) → (..., h·scale, w·scale) float32, as ``F.interpolate(x, scale_factor=scale,
    mode=mode, align_corners=False)``, by :func:`interpolation_matrix`."""
    (h, w), dev = x.shape[-2:], x.device
    return interpolation_matrix(h, scale, mode, dev) @ x.float() @ interpolation_matrix(w, scale, mode, dev).T


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(x)))


class Refiner(ModelMixin, ConfigMixin):
    """(B, 3, r, r) frames in [-1, 1] → (B, 3, r·scale, r·scale) in [-1, 1].

    Args:
        in_resolution: the decoder's frame size r.
        scale: the upscaling factor, a power of two (4: 64² → 256²; 8: 64² → 512²).
        channels: width of the low-resolution trunk.
        num_blocks: residual blocks in the trunk.
        up_channels: width after the first ×2 (halved at each further ×2, at least 16); the last
            ×2 goes straight to RGB.
        use_reference: the network takes a fixed reference frame of the speaker at the output size
            (the ``reference`` buffer, set by :meth:`set_reference`).
        warp_reference: the reference's detail is also warped to the frame and added where a
            predicted mask allows (needs ``use_reference``).
    """

    @register_to_config
    def __init__(self, in_resolution: int = 64, scale: int = 4, channels: int = 32, num_blocks: int = 6,
                 up_channels: int = 32, use_reference: bool = True, warp_reference: bool = False):
        super().__init__()
        n_up = round(math.log2(scale))
        if scale < 2 or 2**n_up != scale:
            raise ValueError(f"scale must be a power of two ≥ 2, got {scale}")
        if warp_reference and not use_reference:
            raise ValueError("warp_reference needs use_reference")
        ref_channels = 3 * scale * scale if use_reference else 0
        self.head = nn.Conv2d(3 + ref_channels, channels, 3, padding=1)
        self.trunk = nn.Sequential(*(_ResBlock(channels) for _ in range(num_blocks)))
        self.trunk_out = nn.Conv2d(channels, channels, 3, padding=1)
        ups: list[nn.Module] = []
        ch = channels
        for k in range(n_up - 1):
            out = max(16, up_channels >> k)
            ups += [nn.Conv2d(ch, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.SiLU()]
            ch = out
        self.up = nn.Sequential(*ups)
        # the last ×2 straight to RGB (ESPCN): no convolution runs at the output size
        self.tail = nn.Conv2d(ch, 3 * 4, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as bicubic upscaling
        nn.init.zeros_(self.tail.bias)
        if use_reference:
            size = in_resolution * scale
            self.register_buffer("reference", torch.zeros(3, size, size))
        if warp_reference:
            # flow (2, low-resolution pixels) and mask logit; zero flow: the reference unmoved
            self.warp = nn.Conv2d(channels, 3, 3, padding=1)
            nn.init.zeros_(self.warp.weight)
            nn.init.zeros_(self.warp.bias)

    @property
    def out_resolution(self) -> int:
        return self.config.in_resolution * self.config.scale

    def set_reference(self, frame: torch.Tensor) -> None:
        """Store (3, R, R) ``frame`` in [-1, 1] (R = the output size) as the reference."""
        if not self.config.use_reference:
            raise ValueError("this refiner was built without a reference")
        if tuple(frame.shape) != tuple(self.reference.shape):
            raise ValueError(f"the reference must be {tuple(self.reference.shape)}, got {tuple(frame.shape)}")
        self.reference.copy_(frame.to(self.reference))

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) → (B, 3, h·scale, w·scale) float32 by bicubic interpolation (as
        ``F.interpolate``'s, by :func:`upsample`): the refiner's base, to which
        it adds what bicubic upscaling misses."""
        return upsample(x, self.config.scale)

    def low_pass(self, x: torch.Tensor) -> torch.Tensor:
        """What survives of (B, 3, H, W) images at the decoder's resolution: area-downscaled by
        ``scale``, then :meth:`upscale` (how the refiner's base is made from a decoder frame)."""
        return self.upscale(F.avg_pool2d(x, self.config.scale))

    def warped_reference(self, flow: torch.Tensor, region: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """The reference sampled at each output pixel of the region moved by ``flow`` (B, 2, h, w)
        (x, y in low-resolution pixels, upsampled bilinearly to the output size)."""
        s, big = self.config.scale, self.reference.shape[-1]
        y, x0 = region
        h, w = size
        flow = upsample(flow.contiguous(), s, "bilinear") * (2 * s / big)
        ys = (torch.arange(y * s, (y + h) * s, device=flow.device, dtype=torch.float32) + 0.5) * (2 / big) - 1
        xs = (torch.arange(x0 * s, (x0 + w) * s, device=flow.device, dtype=torch.float32) + 0.5) * (2 / big) - 1
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2): x, y
        grid = base[None] + flow.permute(0, 2, 3, 1)
        ref = self.reference.float()[None].expand(flow.shape[0], -1, -1, -1)
        return F.grid_sample(ref, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, frames: torch.Tensor, region: tuple[int, int] | None = None,
                return_warped: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Refine (B, 3, r, r) frames; in training, (B, 3, h, w) patches whose top-left corner is
        at low-resolution pixel ``region`` = (y, x) of the frame (the reference is cut to match).
        ``return_warped`` (a refiner with ``warp_reference``): also the warped reference."""
        r = self.config.in_resolution
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"the refiner takes (B, 3, {r}, {r}) frames, got {tuple(frames.shape)}")
        y, x0 = region or (0, 0)
        h, w = frames.shape[-2:]
        if (region is None and (h, w) != (r, r)) or y < 0 or x0 < 0 or y + h > r or x0 + w > r:
            raise ValueError(f"the refiner takes (B, 3, {r}, {r}) frames (or patches of them), got "
                             f"{tuple(frames.shape)} at {region}")
        dtype = self.head.weight.dtype
        x = frames.to(dtype)
        base = self.upscale(x)
        feats = x
        if self.config.use_reference:
            ref = F.pixel_unshuffle(self.reference.to(dtype)[None], self.config.scale)[..., y : y + h, x0 : x0 + w]
            feats = torch.cat([x, ref.expand(x.shape[0], -1, -1, -1)], 1)
        feats = self.head(feats.contiguous(memory_format=torch.channels_last))  # faster convolutions
        feats = feats + self.trunk_out(self.trunk(feats))
        # (pixel shuffle and interpolation are several times slower on channels-last tensors)
        out = base + F.pixel_shuffle(self.tail(self.up(feats)).contiguous(), 2).float()
        warped = None
        if self.config.warp_reference:
            flow_mask = self.warp(feats).float()
            warped = self.warped_reference(flow_mask[:, :2], (y, x0), (h, w))
            mask = torch.sigmoid(upsample(flow_mask[:, 2:].contiguous(), self.config.scale, "bilinear"))
            out = out + mask * (warped - self.low_pass(warped))
        out = out.clamp(-1, 1).contiguous()
        if return_warped:
            if warped is None:
                raise ValueError("this refiner does not warp its reference")
            return out, warped
        return out
