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
    def express_frames(self, images: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, r, r) decoder frames in [-1, 1] moved by the speaker's expression warp to show
        ``emotion`` ((1, E) or (B, E) intensities); as they came where the speaker has none or the
        emotion is None or all zeros. float32 (the warp is small); no gradients."""
        if self.expression is None or emotion is None:
            return images
        device = self.expression.device
        out = self.expression(images.to(device, self.expression.dtype), emotion.to(device, self.expression.dtype))
        return out.to(images.device, images.dtype)
