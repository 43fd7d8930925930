"""The voice gate: is someone speaking to the camera, or is it only a room of other voices?

Silero VAD (:mod:`talker.vad`) hears any speech as speech: babble (several people talking at
once, none of them the speaker) opens the lips as a voice does. The voice gate is a small causal
network on log-mel frames that gives, per video frame, the probability that one foreground voice
is speaking; trained on the speaker's own training speech (per-frame truth: where its words are)
mixed with noises and with babble made of other clips, and on noise and babble alone (truth: no
one speaks) (``talker train gate``). The pipeline multiplies the mouth opening by it (sharpened
toward its decision: ``sharpness``) as it does by P(speech) (``Speech2Latent.forward(...,
speaking=...)``), so the lips stay shut on babble and follow the voice that stands out of it.

Causal by default: a frame's probability depends on audio up to the end of that frame only
(convolutions padded on the left, a unidirectional GRU), so live input would need no more
look-ahead for it (the pipeline does not use it there yet: on 2-s live contexts it cost
lip-sync). ``bidirectional``: every frame hears its whole window, before and after (centred
convolutions, a GRU each way): a causal gate needs seconds of babble before it knows it for one,
while a whole clip lets the first frames know it too.
Loudness independent: each call's log-mel is standardised over its whole window.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..audio import samples_for_frames
from ..defaults import FPS


class VoiceGate(ModelMixin, ConfigMixin):
    """(B, T, n_mels) log-mel at ``feature_rate`` Hz → (B, T × fps / feature_rate) logits, one per
    video frame (the mean of its feature frames' logits).

    Args:
        n_mels: log-mel bands (those of :func:`talker.frontends.log_mel`).
        hidden_size: width of the convolutions and of the GRU.
        num_layers: GRU layers.
        kernel_size: time width of each of the two convolutions (feature frames; causal unless
            ``bidirectional``).
        feature_rate: feature frames per second (100: hop 160 at 16 kHz).
        fps: video frames per second.
        bidirectional: each frame's probability from the whole window (module docstring), not
            only the audio up to it.
        sharpness: :meth:`probability` multiplies the logits by it before the sigmoid, so the
            frames the gate is unsure of move toward its decision (P ≥ 0.5 passes; at 5, P 0.4
            and 0.6 as trained become 0.12 and 0.88): babble it shuts at 0.3 – 0.5 leaves the
            lips shut instead of a third open. Training and the pass/shut figures do not see it.
    """

    @register_to_config
    def __init__(self, n_mels: int = 80, hidden_size: int = 96, num_layers: int = 2, kernel_size: int = 5,
                 feature_rate: int = 100, fps: int = FPS, bidirectional: bool = False, sharpness: float = 5.0):
        super().__init__()
        if feature_rate % fps:
            raise ValueError(f"feature_rate ({feature_rate}) must be a multiple of fps ({fps})")
        self.conv = nn.Sequential(nn.Conv1d(n_mels, hidden_size, kernel_size), nn.GELU(),
                                  nn.Conv1d(hidden_size, hidden_size, kernel_size), nn.GELU())
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                          bidirectional=bidirectional)
        self.out = nn.Linear(hidden_size * (2 if bidirectional else 1), 1)

    @property
    def features_per_frame(self) -> int:
        return self.config.feature_rate // self.config.fps

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) log-mel, T a multiple of ``features_per_frame`` → (B, T / features_per_frame) logits."""
        dtype = self.out.weight.dtype
        mel = mel.to(dtype)
        mel = (mel - mel.mean((1, 2), keepdim=True)) / (mel.std((1, 2), keepdim=True) + 1e-3)
        pad = 2 * (self.config.kernel_size - 1)  # two convolutions: causal, all of it on the left
        left = pad // 2 if self.config.bidirectional else pad
        x = nn.functional.pad(mel.transpose(1, 2), (left, pad - left))
        x, _ = self.gru(self.conv(x).transpose(1, 2))
        logits = self.out(x)[..., 0]
        return logits.reshape(logits.shape[0], -1, self.features_per_frame).mean(-1)

    @torch.no_grad()
    def probability(self, wave: np.ndarray | torch.Tensor, n_frames: int) -> torch.Tensor:
        """16 kHz mono ``wave`` (cut or zero-padded to ``n_frames`` video frames) → (n_frames,)
        float32 probabilities that a foreground voice speaks in each frame (logits × ``sharpness``)."""
        from ..frontends import log_mel

        mel = log_mel(samples_for_frames(wave, n_frames), n_frames, n_mels=self.config.n_mels)
        return torch.sigmoid(self.config.sharpness * self(mel[None].to(self.device))[0]).float().cpu()


__all__ = ["VoiceGate"]
