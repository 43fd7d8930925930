"""The expression warp: emotion shown by moving the decoder's frame, in proportion to each intensity.

Why not through the diffusion autoencoder: its semantic encoder keeps little of an expression
(``bench/emotion.py``'s ``reconstruction_ratio``: 2–5% of a smile's change of the mouth corners
comes back through the encoder and decoder), so neither a z_sem that speech2latent predicts nor
an emotion input of the frozen decoders (``reconstruction_with_input_ratio``: a fifth of a smile)
can draw what the decoder never learned to draw.

So the face is moved after decoding, as warping-based face animation moves a source image
(First Order Motion Model, Siarohin et al., NeurIPS 2019; LivePortrait, Guo et al., 2024): a
small convolutional network reads the decoder's frame (where the mouth, brows and eyes are, and
how open the mouth is) and predicts, for every emotion k, a flow field F_k (pixels) and a colour
residual R_k (teeth, shading). The frame with intensities e is

    grid_sample(frame, identity + Σ_k e_k F_k(frame)) + Σ_k e_k R_k(frame)

— linear in the intensities by construction: half an intensity moves the face half as far, two
emotions add their moves, and a frame whose intensities are all zero is returned as it came, bit
for bit. With ``forward_flow`` the fields say where each pixel of the frame goes instead (the move
of a mouth corner sits on the corner the network reads, not where the corner will be), and
Σ_k e_k F_k is turned into the backward flow above by fixed-point iteration (:func:`backward_of`):
every point then moves exactly in proportion to the intensities. Where the speaker has a refiner,
the move is applied to the refiner's rendering of the decoder's frame (``onto``: the flow upsampled
and scaled to its size), not to the frame before the refiner, which warps a neutral reference
frame's detail and would pull a moved face part of the way back; the pipeline reads the fields off
that rendering brought to the side the warp reads (the decoder's, or the takes' sharp side: ``read_side``)
(:meth:`~talker.pipelines.dae_talker.expression.ExpressionMixin.express_frames`). Trained on the
speaker's own paired takes, each line neutral and with an emotion (``talker add-emotion --method
warp``, :mod:`talker.training.expression`). Deterministic, one frame in, one frame out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..defaults import EXPRESSION_FIELD_SCALES as FIELD_SCALES, EXPRESSION_INVERSE_ITERATIONS as INVERSE_ITERATIONS

#: a flow field (x, y) and a colour residual (r, g, b) per emotion
FIELDS = 5


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class ExpressionWarp(ModelMixin, ConfigMixin):
    """Per-emotion flow and colour residual of a decoder frame (see the module's docstring).

    Args:
        emotion_names: the intensities' order (the speaker's ``emotion_names``).
        resolution: the side of the decoder's frames it was trained with; frames of another side are
            brought to the side it reads (:attr:`read_side`, :func:`read_at`).
        channels: width at half the frame's side (half that at full size, twice at a quarter).
        num_blocks: residual blocks at the coarsest level.
        field_scale: the side the fields are predicted at, over the frame's: 0.5 (a smooth field; warps
            saved without it), 1 (a level at the frame's own side) or 2 (one more, at twice it: a
            lower eyelid or the lips' inner edge moves a pixel or two of the sharper frame the move
            is applied to).
        read_side: the side of the frames the fields are read off (None: ``resolution``, the
            decoder's; warps saved without it): where the speaker has a refiner, its frame is
            brought to this side for the warp to read (a lid a pixel thick at the decoder's 64² is
            two at 128²), and the fields, at ``field_scale`` of it, are finer with it.
        forward_flow: the fields' flow says where each pixel of the frame goes, so a mouth
            corner's move sits on the corner the network reads, and is turned into the backward
            flow that samples the frame (:func:`backward_of`); False (warps saved without it): the
            flow is backward already (pixel p of the moved frame read at p + flow(p)), and a
            corner's move sits where the corner will be.
        residual_scale: the side the colour residual is kept at, over the read frame's (None: the
            fields', as warps saved without it): a residual coarser than the flow draws shading and
            teeth but cannot paint a lid's or a lip's edge a pixel over where the flow should move it.
    """

    @register_to_config
    def __init__(self, emotion_names: tuple[str, ...] = ("happy", "sad", "angry", "surprised"), resolution: int = 64,
                 channels: int = 32, num_blocks: int = 2, field_scale: float = 0.5, forward_flow: bool = False,
                 read_side: int | None = None, residual_scale: float | None = None):
        super().__init__()
        if field_scale not in FIELD_SCALES:
            raise ValueError(f"field_scale must be one of {', '.join(map(str, FIELD_SCALES))}; got {field_scale}")
        if residual_scale is not None and not (residual_scale in FIELD_SCALES and residual_scale <= field_scale):
            raise ValueError(f"residual_scale must be None or one of {', '.join(map(str, FIELD_SCALES))} no larger than "
                             f"field_scale {field_scale}; got {residual_scale}")
        c, k = channels, len(emotion_names)
        self.stem = nn.Conv2d(3, c // 2, 3, padding=1)
        self.down1 = nn.Conv2d(c // 2, c, 4, stride=2, padding=1)
        self.down2 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.mid = nn.Sequential(*[_Block(2 * c) for _ in range(num_blocks)])
        self.up = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = _Block(c)
        width = c
        if field_scale >= 1:  # a level at the frame's side, with the stem's features
            self.up_full = nn.Conv2d(c, c // 2, 3, padding=1)
            self.out_full = _Block(c // 2)
            width = c // 2
        if field_scale >= 2:  # and one at twice it, from those alone
            self.up_double = nn.Conv2d(c // 2, c // 4, 3, padding=1)
            self.out_double = _Block(c // 4)
            width = c // 4
        self.head = nn.Conv2d(width, k * FIELDS, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # starts as the identity: no move, no residual
        nn.init.zeros_(self.head.bias)

    @property
    def n_emotions(self) -> int:
        return len(self.config.emotion_names)

    @property
    def read_side(self) -> int:
        """The side of the frames it reads its fields off (its ``read_side``, else the decoder's)."""
        return self.config.read_side or self.config.resolution

    def fields(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) frames in [-1, 1] → (B, E, 5, H', W'): each emotion's flow (pixels of the
        frame, x then y) and colour residual at intensity 1, predicted at ``field_scale`` of the
        frame's side (the network sees a quarter-side level for its reach across the face) and
        upsampled to the frame's side, or at twice it for ``field_scale`` 2; the residual averaged
        down to ``residual_scale`` of the frame's side and back where that is coarser."""
        b, _, h, w = images.shape
        s0 = F.silu(self.stem(images))
        s1 = F.silu(self.down1(s0))
        x = self.mid(F.silu(self.down2(s1)))
        x = self.out(F.silu(self.up(F.interpolate(x, size=s1.shape[-2:], mode="bilinear", align_corners=False))) + s1)
        scale = self.config.field_scale
        if scale >= 1:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            x = self.out_full(F.silu(self.up_full(x)) + s0)
        if scale >= 2:
            x = F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)
            x = self.out_double(F.silu(self.up_double(x)))
        x = self.head(x)
        size = (2 * h, 2 * w) if scale >= 2 else (h, w)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.view(b, self.n_emotions, FIELDS, *size)
        coarse = self.config.residual_scale
        if coarse is not None and coarse < scale:  # the residual averaged down to its side and back up
            side = (round(h * coarse), round(w * coarse))
            residual = F.interpolate(x[:, :, 2:].flatten(0, 1), size=side, mode="area")
            residual = F.interpolate(residual, size=size, mode="bilinear", align_corners=False)
            x = torch.cat([x[:, :, :2], residual.view(b, self.n_emotions, FIELDS - 2, *size)], 2)
        return x

    def fields_at(self, images: torch.Tensor, emotion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fields' flow (forward or backward, as ``forward_flow`` says) and colour residual for
        intensities ``emotion`` ((B, E) or (1, E)): Σ_k e_k × emotion k's, linear in the intensities."""
        e = emotion.to(images.device, images.dtype).expand(images.shape[0], -1)
        total = torch.einsum("bk,bkfhw->bfhw", e, self.fields(images))
        return total[:, :2], total[:, 2:]

    def move(self, images: torch.Tensor, emotion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, H', W') backward flow in pixels of the frames read (``images`` brought to
        :attr:`read_side`, :func:`read_at`; pixel p of the moved frame is the frame's p + flow(p))
        and (B, 3, H', W') colour residual for intensities ``emotion`` ((B, E) or (1, E)), at the
        fields' side (``field_scale`` of the read frame's). The fields are linear in the
        intensities: a backward flow is the move as it comes; a forward one (``forward_flow``) is
        turned backward (:func:`backward_of`), so the points it carries move in proportion."""
        images = read_at(images, self.read_side)
        flow, residual = self.fields_at(images, emotion)
        if self.config.forward_flow:  # inverted in the fields' own pixels
            step = flow.shape[-1] / images.shape[-1]
            flow, residual = backward_of(flow * step, residual)
            flow = flow / step
        return flow, residual

    def move_at(self, images: torch.Tensor, emotion: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`move` for a frame of ``size`` (H', W') showing the same face as ``images``: the
        flow upsampled and scaled to that frame's pixels, so that the face moves as far, in
        proportion to its size, as the warp learned at the side it reads (a forward flow upsampled
        before it is turned backward, at that frame's own pixels). A pixel p of the moved frame is
        the frame's p + flow(p)."""
        images = read_at(images, self.read_side)
        flow, residual = self.fields_at(images, emotion) if self.config.forward_flow else self.move(images, emotion)
        (h, w), (big_h, big_w) = images.shape[-2:], tuple(size)
        if flow.shape[-2:] != (big_h, big_w):
            flow = F.interpolate(flow, size=(big_h, big_w), mode="bilinear", align_corners=False)
            residual = F.interpolate(residual, size=(big_h, big_w), mode="bilinear", align_corners=False)
        if (big_h, big_w) != (h, w):  # the flow is in the read frame's pixels
            flow = flow * torch.tensor([big_w / w, big_h / h], device=flow.device, dtype=flow.dtype)[None, :, None, None]
        if self.config.forward_flow:
            flow, residual = backward_of(flow, residual)
        return flow, residual

    def forward(self, images: torch.Tensor, emotion: torch.Tensor, onto: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) frames in [-1, 1] with intensities ``emotion`` ((B, E) or (1, E), each in
        [0, 1]) → the frames showing them; rows whose intensities are all zero come back unchanged.

        ``onto``: (B, 3, H', W') frames the move is applied to in place of ``images`` (the same
        frames at another size: the refiner's rendering of the decoder's frames); the fields are
        read off ``images`` brought to :attr:`read_side` (:meth:`move_at`)."""
        if emotion.shape[-1] != self.n_emotions:
            raise ValueError(f"the expression warp takes {self.n_emotions} intensities; got {emotion.shape[-1]}")
        target = images if onto is None else onto
        if target.shape[0] != images.shape[0]:
            raise ValueError(f"onto holds {target.shape[0]} frames for {images.shape[0]} frames read")
        b = images.shape[0]
        e = emotion.to(images.device, images.dtype).expand(b, -1)
        neutral = (e == 0).all(1)
        if bool(neutral.all()):
            return target
        flow, residual = self.move_at(images, e, target.shape[-2:])
        target = target.to(flow.dtype)
        return torch.where(neutral[:, None, None, None], target, apply_move(target, flow, residual))


def read_at(frames: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) frames → (B, C, side, side), the frames a warp reads its fields off
    (:attr:`ExpressionWarp.read_side`): as they are at that side, scaled down by area averaging (a
    refiner's frame), or up bilinearly (a decoder's frame for a warp that reads a refiner's side)."""
    if frames.shape[-2:] == (side, side):
        return frames
    if frames.shape[-1] > side:
        return F.interpolate(frames, size=(side, side), mode="area")
    return F.interpolate(frames, size=(side, side), mode="bilinear", align_corners=False)


def sample_at(frames: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) ``frames`` read at p + flow(p) for every pixel p (a (B, 2, H, W) flow in their
    pixels; bilinear, the border repeated)."""
    h, w = frames.shape[-2:]
    ys = (torch.arange(h, device=flow.device, dtype=flow.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=flow.device, dtype=flow.dtype) * 2 + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2): x, y in align_corners=False units
    scale = torch.tensor([2 / w, 2 / h], device=flow.device, dtype=flow.dtype)
    grid = grid + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_move(frames: torch.Tensor, flow: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) frames moved by a (B, 2, H, W) flow in their pixels (pixel p of the result is
    the frame's p + flow(p), bilinear, the border repeated) and a (B, 3, H, W) colour residual added."""
    return sample_at(frames, flow) + residual


#: the smallest side :func:`backward_of` inverts a move at before the frame's own
INVERSE_COARSEST = 32


def backward_of(forward: torch.Tensor, residual: torch.Tensor,
                iterations: int = INVERSE_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """A forward move (the frame's pixel q goes to q + ``forward``(q), in pixels, its colour
    changed by ``residual``(q)) as the backward flow and residual :func:`apply_move` takes: pixel p
    of the moved frame shows the frame's p + b(p), where b(p) = −forward(p + b(p)), found by damped
    fixed-point iteration (it converges wherever the move neither folds the frame nor stretches it
    more than threefold), the residual carried along with its pixel. Coarse to fine: the move is
    first inverted at half the side (and so on down to :data:`INVERSE_COARSEST`), and each side's
    iterations start from the flow found at the one below, so that where the move squeezes the
    frame (above a raised brow, where each step gains little) the steps of every side add up."""
    flow = _inverse(forward, iterations)
    return flow, sample_at(residual, flow)


def _inverse(forward: torch.Tensor, iterations: int) -> torch.Tensor:
    h, w = forward.shape[-2:]
    if min(h, w) >= 2 * INVERSE_COARSEST:  # start from the move inverted at half the side
        shrink = torch.tensor([(w // 2) / w, (h // 2) / h], device=forward.device, dtype=forward.dtype)[None, :, None, None]
        half = F.interpolate(forward, size=(h // 2, w // 2), mode="area") * shrink  # in the half side's pixels
        flow = F.interpolate(_inverse(half, iterations), size=(h, w), mode="bilinear", align_corners=False) / shrink
    else:
        flow = -forward
    for _ in range(iterations):
        flow = 0.5 * (flow - sample_at(forward, flow))
    return flow
