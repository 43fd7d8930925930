"""The DAE decoder: a UNet that predicts noise from ``(x_t, t, z_sem)``.

This follows DiffAE's ``BeatGANsAutoencModel`` (Preechakul et al., CVPR 2022): every residual
block — down path, middle and up path — is conditioned on both the timestep and the semantic
latent through adaptive GroupNorm::

    h = GroupNorm(h)
    h = h * (1 + t_scale) + t_shift      # from the timestep embedding
    h = h * (1 + z_scale)                # from z_sem; a scale only, no shift
    h = Conv3x3(Dropout(SiLU(h)))        # zero-initialised

diffusers' ``UNet2DModel(class_embed_type="identity", resnet_time_scale_shift="scale_shift")``
would add ``z_sem`` to the time embedding instead; DiffAE's multiplicative, per-block z scale is
what lets one latent steer the whole image, so it is written out here.

**Emotion as an input of its own** (``emotion_dim`` > 0). DiffAE's semantic encoder keeps what
dominates the pixels (head pose, mouth opening, blinks) and little of a 64-pixel smile or frown:
the bundled speaker's frames with an emotion at 1.0 encode to latents that its decoder renders with
2–5% of the truth's change of the mouth corners and width for happy and sad, and angry's lip gap
with the wrong sign (``bench/emotion.py``'s ``reconstruction_ratio``). A decoder can take the
emotion intensities directly instead: an embedding ``u(e) = MLP(e) − MLP(0)`` (exactly zero for
neutral) gives every residual block a further AdaGN scale and shift, from zero-initialised
projections::

    h = GroupNorm(h) * (1 + t_scale + e_scale) + t_shift + e_shift

so a decoder given these layers renders exactly what it rendered before until they are trained,
and for neutral always (:func:`talker.training.emotion_input.train_emotion_input` trains them alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


PREDICTION_TYPES = ("epsilon", "sample")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class CondResBlock(nn.Module):
    """DiffAE residual block with AdaGN on time (scale, shift) and z_sem (scale)."""

    def __init__(self, in_ch, out_ch, emb_ch, z_dim, dropout, groups, up=False, down=False, emotion_ch=0):
        super().__init__()
        self.in_norm = _norm(in_ch, groups)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.up, self.down = up, down
        self.time_proj = nn.Linear(emb_ch, 2 * out_ch)
        self.z_proj = nn.Linear(z_dim, out_ch)
        self.out_norm = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.emotion_proj = _zero(nn.Linear(emotion_ch, 2 * out_ch, bias=False)) if emotion_ch else None

    def _resize(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb, z, u=None):
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resize(h))
        x = self._resize(x)
        t_scale, t_shift = self.time_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        z_scale = self.z_proj(F.silu(z))[:, :, None, None]
        if u is not None and self.emotion_proj is not None:
            e_scale, e_shift = self.emotion_proj(u)[:, :, None, None].chunk(2, dim=1)
            t_scale, t_shift = t_scale + e_scale, t_shift + e_shift
        h = self.out_norm(h) * (1 + t_scale) + t_shift
        h = h * (1 + z_scale)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Spatial self-attention with a zero-initialised output projection."""

    def __init__(self, channels, num_heads, groups):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))
        self.num_heads = num_heads

    def forward(self, x, *_):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, hh * ww).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class _Stage(nn.ModuleList):
    """A residual block optionally followed by attention; both see (emb, z, u)."""

    def forward(self, x, emb, z, u=None):
        for layer in self:
            x = layer(x, emb, z, u)
        return x


@dataclass
class DAEDecoderOutput(BaseOutput):
    """``sample``: the predicted noise, or the predicted image for ``prediction_type="sample"``, (B, C, H, W)."""

    sample: torch.Tensor


class DAEDecoderUNet(ModelMixin, ConfigMixin):
    """Conditional DDIM decoder ``eps_theta(x_t, t, z_sem)`` of the diffusion autoencoder.

    Args:
        sample_size: image side in pixels (square).
        in_channels / out_channels: image channels (3).
        base_channels: channels of the first level; level ``i`` has ``base × channel_mult[i]``.
        channel_mult: one entry per resolution level; the image is halved between levels.
        num_res_blocks: residual blocks per level on the down path (up path: one more).
        attention_resolutions: feature-map sides (pixels) that get self-attention.
        num_heads: attention heads.
        dropout: dropout inside residual blocks (DiffAE: 0.1).
        z_dim: size of the semantic latent ``z_sem``.
        embed_channels: size of the timestep embedding.
        norm_groups: GroupNorm groups (capped at the channel count).
        prediction_type: what the output is: "epsilon", the noise (the DDIM decoder), or
            "sample", the final image (a few-step decoder distilled from it,
            :mod:`talker.training.distill`); the decoding scheduler is configured to match.
        emotion_dim: how many emotion intensities the decoder takes as an input of its own (0:
            none; the speaker's emotion then lives in z_sem alone). See the module's docstring.
        emotion_channels: size of the emotion embedding ``u(e)``.
    """

    _supports_gradient_checkpointing = False

    @property
    def takes_emotion(self) -> bool:
        """Whether the decoder takes emotion intensities as an input (``emotion_dim`` > 0)."""
        return bool(self.config.emotion_dim)

    def embed_emotion(self, emotion: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """``u(e) = MLP(e) − MLP(0)`` for (B or 1, emotion_dim) intensities, (B, emotion_channels);
        None for None (neutral: every block as without emotion)."""
        if emotion is None:
            return None
        if not self.takes_emotion:
            raise ValueError("this decoder takes no emotion input (emotion_dim is 0)")
        e = emotion.to(self.emotion_embed[0].weight.dtype).reshape(-1, self.config.emotion_dim)
        u = self.emotion_embed(e) - self.emotion_embed(torch.zeros_like(e[:1]))
        return u.to(dtype).expand(batch, -1) if u.shape[0] == 1 else u.to(dtype)

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        num_heads: int = 1,
        dropout: float = 0.1,
        z_dim: int = 512,
        embed_channels: int = 512,
        norm_groups: int = 32,
        prediction_type: str = "epsilon",
        emotion_dim: int = 0,
        emotion_channels: int = 128,
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")
        self.time_proj = Timesteps(base_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, embed_channels), nn.SiLU(), nn.Linear(embed_channels, embed_channels)
        )
        emotion_ch = emotion_channels if emotion_dim else 0
        self.emotion_embed = nn.Sequential(
            nn.Linear(emotion_dim, emotion_ch), nn.SiLU(), nn.Linear(emotion_ch, emotion_ch)
        ) if emotion_dim else None

        def res(i, o, **kw):
            return CondResBlock(i, o, embed_channels, z_dim, dropout, norm_groups, emotion_ch=emotion_ch, **kw)

        def attn(c):
            return SelfAttention2d(c, num_heads, norm_groups)

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, side = base_channels, sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                stage = _Stage([res(ch, base_channels * mult)])
                ch = base_channels * mult
                if side in attention_resolutions:
                    stage.append(attn(ch))
                self.down.append(stage)
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(_Stage([res(ch, ch, down=True)]))
                skip_channels.append(ch)
                side //= 2

        self.middle = _Stage([res(ch, ch), attn(ch), res(ch, ch)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                stage = _Stage([res(ch + skip_channels.pop(), base_channels * mult)])
                ch = base_channels * mult
                if side in attention_resolutions:
                    stage.append(attn(ch))
                if level and i == num_res_blocks:
                    stage.append(res(ch, ch, up=True))
                    side *= 2
                self.up.append(stage)

        self.out = nn.Sequential(_norm(ch, norm_groups), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        z_sem: torch.Tensor,
        return_dict: bool = True,
        *,
        emotion: torch.Tensor | None = None,
    ) -> DAEDecoderOutput | tuple[torch.Tensor]:
        """Predict the noise in ``sample`` (or the clean image, for ``prediction_type="sample"``).

        Args:
            sample: noisy images x_t, (B, C, H, W) in the [-1, 1] image scale.
            timestep: diffusion step(s) in [0, 1000), a scalar or (B,).
            z_sem: semantic latents, (B, z_dim) — or (1, z_dim), broadcast over the batch.
            emotion: intensities, (B, emotion_dim) or (1, emotion_dim); only for a decoder that
                takes them (:attr:`takes_emotion`); None is neutral.
        """
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t
        emb = self.time_embed(self.time_proj(t).to(sample.dtype))
        z = z_sem.to(sample.dtype)
        if z.shape[0] == 1 and b > 1:
            z = z.expand(b, -1)

        u = self.embed_emotion(emotion, b, sample.dtype)

        h = self.conv_in(sample)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb, z, u)
            skips.append(h)
        h = self.middle(h, emb, z, u)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, z, u)
        out = self.out(h)
        if not return_dict:
            return (out,)
        return DAEDecoderOutput(sample=out)
