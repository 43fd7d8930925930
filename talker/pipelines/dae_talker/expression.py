"""How a speaker with an expression warp shows emotion (:class:`~talker.models.ExpressionWarp`):
the warp moves the decoder's frames, and speech2latent is given no emotion."""

from __future__ import annotations

import torch


class ExpressionMixin:
    """``latent_emotion`` and ``express_frames``; mixed into :class:`DAETalkerPipeline`."""

    def latent_emotion(self, emotion: torch.Tensor | None) -> torch.Tensor | None:
        """The intensities speech2latent is given: None (neutral latents) where the speaker shows
        emotion by its expression warp, which would otherwise show it twice; else ``emotion``."""
        return None if self.expression is not None else emotion

    @torch.no_grad()
    def express_frames(self, images: torch.Tensor, emotion: torch.Tensor | None,
                       onto: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, r, r) decoder frames in [-1, 1] moved by the speaker's expression warp to show
        ``emotion`` ((1, E) or (B, E) intensities); ``onto``: the same frames at the refiner's size,
        which are moved instead, the move read off them brought to the side the warp reads
        (:attr:`~talker.models.ExpressionWarp.read_side`: the decoder's, or the takes' sharp side
        for a warp trained to read it; :func:`~talker.models.expression.read_at`) and scaled up.
        The warp learned to read its fields off the takes' own frames at that side, and the
        refined frame brought down to it is closer to those than the decoder's
        softer one (bench/results/emotion_summary_read_refined.json against
        emotion_summary_square.json: sad's brows and angry's lip gap 4-11 points nearer the truth's
        change, the smile's shut lips closed in more pauses). As they came (``onto`` where given)
        where the speaker has no warp or the emotion is None or all zeros. float32 (the warp is
        small); no gradients."""
        target = images if onto is None else onto
        if self.expression is None or emotion is None:
            return target
        device, dtype = self.expression.device, self.expression.dtype
        onto = None if onto is None else onto.to(device, dtype)
        read = images.to(device, dtype) if onto is None else onto  # the warp brings it to its read side
        out = self.expression(read, emotion.to(device, dtype), onto)
        return out.to(target.device, target.dtype)
