"""The semantic encoder of the diffusion autoencoder: image → ``z_sem``.

DiffAE's ``BeatGANsEncoderModel``: the first half of a UNet with no time input, residual blocks
with stride-2 residual downsampling, attention at the chosen sides, a Res-Attn-Res middle, then
GroupNorm → SiLU → global average pool → 1×1 conv to ``z_dim``. It is trained jointly with the
decoder by the decoder's noise-prediction loss alone.

``normalize_z`` adds a parameter-free BatchNorm to the output: every dimension of ``z_sem`` has zero
mean and unit variance over the training frames. DiffAE needs none on FFHQ, where faces differ a lot;
on one speaker's video the frames differ only in mouth, eyes and pose, the pooled features barely
move, and without it the encoder collapses: on the bundled speaker after 3,750 steps the
frame-to-frame std of each z dimension was 0.002 against a mean magnitude of 0.26, and decoding with
another frame's z changed the image by < 0.1%. Standardised, z varies at unit scale from the first
step, so the decoder is pushed to use it (and speech2latent regresses well-scaled targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class ResBlock(nn.Module):
    """Unconditioned residual block (GN → SiLU → conv, twice), optionally halving the image."""

    def __init__(self, in_ch, out_ch, dropout, groups, down=False):
        super().__init__()
        self.down = down
        self.in_norm = _norm(in_ch, groups)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.out_norm = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x):
        h = F.silu(self.in_norm(x))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        h = self.in_conv(h)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels, num_heads, groups):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.num_heads = num_heads

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, hh * ww).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class SemanticEncoder(ModelMixin, ConfigMixin):
    """Image → semantic latent ``z_sem`` (no time input).

    Args:
        sample_size: image side in pixels (square).
        in_channels: image channels (3).
        base_channels: channels of the first level; level ``i`` has ``base × channel_mult[i]``.
        channel_mult: one entry per level; the image is halved between levels.
        num_res_blocks: residual blocks per level.
        attention_resolutions: feature-map sides (pixels) that get self-attention.
        num_heads: attention heads.
        dropout: dropout inside residual blocks.
        z_dim: size of ``z_sem`` (DiffAE: 512).
        norm_groups: GroupNorm groups (capped at the channel count).
        normalize_z: standardise ``z_sem`` per dimension (BatchNorm without affine parameters;
            running statistics at inference).
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        num_heads: int = 1,
        dropout: float = 0.1,
        z_dim: int = 512,
        norm_groups: int = 32,
        normalize_z: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, padding=1)]
        ch, side = base_channels, sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(ch, base_channels * mult, dropout, norm_groups))
                ch = base_channels * mult
                if side in attention_resolutions:
                    layers.append(Attention(ch, num_heads, norm_groups))
            if level != len(channel_mult) - 1:
                layers.append(ResBlock(ch, ch, dropout, norm_groups, down=True))
                side //= 2
        layers += [
            ResBlock(ch, ch, dropout, norm_groups),
            Attention(ch, num_heads, norm_groups),
            ResBlock(ch, ch, dropout, norm_groups),
            _norm(ch, norm_groups),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(ch, z_dim, 1),
            nn.Flatten(),
        ]
        if normalize_z:
            # eps far below the variance it divides: that variance can be ~1e-6 (see above)
            layers.append(nn.BatchNorm1d(z_dim, eps=1e-10, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, C, H, W) in [-1, 1] → ``z_sem`` (B, z_dim)."""
        if not self.config.normalize_z or self.layers[-3].weight.dtype != torch.float32:
            return self.layers(images)
        # the head (GroupNorm … standardisation) runs in float32 even under bf16/fp16 autocast:
        # the frame-to-frame differences it standardises are below bf16's resolution
        head = 6
        h = self.layers[:-head](images)
        with torch.autocast(images.device.type, enabled=False):
            return self.layers[-head:](h.float()).to(images.dtype)
