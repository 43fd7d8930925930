"""speech2latent: audio features → one semantic latent ``z_sem`` and one head pose per video frame.

DAE-Talker's second stage (Du et al., ACM MM 2023)::

    features (100 Hz log-mel or 50 Hz wav2vec2)
      → stride-2 Conv1d ×log2(rate/25)      exactly one token per 25 fps frame
      → (+ emotion projection)              READ Avatars-style intensities, zeros = neutral
      → Conformer blocks (encoder)
      → PoseAdaptor                         predicts yaw/pitch/roll; adds a pose embedding back
      → Conformer blocks (decoder)
      → Linear                              normalised z_sem

Feature, latent and pose statistics are buffers, so they are saved with the weights.

With ``chunk_frames`` = C > 0 the network streams (for live input): frames are taken in chunks
of C, and a frame's output depends on the audio only up to the end of its chunk (a look-ahead of
at most C − 1 frames): attention sees the past and its own chunk (chunk-wise attention, as
streaming Conformer recognisers do), convolutions are causal, the normalisations are per frame
(the window normalisation uses running statistics of the past). C = 0 is the paper's
bidirectional network, which needs the whole window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..defaults import EMOTIONS  # the default names; a checkpoint's own are speech_to_latent.config.emotion_names
from ..frontends import frontend_named


def _rotary(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Rotary position embedding over the time axis of (B, heads, T, d), at positions offset … offset + T − 1."""
    t, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = torch.arange(offset, offset + t, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class FeedForward(nn.Module):
    def __init__(self, hidden, ffn, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, ffn), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(ffn, hidden), nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions (relative, so any window length works)."""

    def __init__(self, hidden, num_heads, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.num_heads, self.dropout = num_heads, dropout

    def forward(self, x, mask):
        """``mask``: None, (B, N) True on real frames, or (B, 1, N, N) True where a query frame may
        attend to a key frame."""
        b, t, h = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = _rotary(q), _rotary(k)
        attn_mask = None if mask is None else (mask if mask.dim() == 4 else mask[:, None, None, :])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.out(y.transpose(1, 2).reshape(b, t, h)), self.dropout, self.training)


class CausalConv1d(nn.Conv1d):
    """Conv1d whose output at t sees inputs up to t only (padded on the left)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x):
        return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))


class FrameNorm(nn.LayerNorm):
    """LayerNorm over the channels of every frame of (B, C, T): no statistics across time."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def emotion_knot_weights(emotion: torch.Tensor, knots: int) -> torch.Tensor:
    """(..., E) intensities → (..., E, K) weights of each emotion's offsets at the intensities
    1/K, 2/K … 1: piecewise linear in the intensity (a "hat" around each knot, the zero offset at
    intensity 0), so the weights of one emotion are its intensity itself when K = 1."""
    if knots == 1:
        return emotion[..., None]
    position = emotion.clamp(0, 1)[..., None] * knots  # in knot units
    at = torch.arange(1, knots + 1, dtype=emotion.dtype, device=emotion.device)
    return (1 - (position - at).abs()).clamp_min(0)


def conv1d(causal: bool, in_ch: int, out_ch: int, kernel_size: int, **kwargs) -> nn.Conv1d:
    """A same-length Conv1d: centred, or causal (for the streaming network)."""
    if causal:
        return CausalConv1d(in_ch, out_ch, kernel_size, **kwargs)
    return nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, **kwargs)


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise → GLU → depthwise → norm → SiLU → pointwise
    (causal depthwise convolution and a per-frame norm when ``causal``)."""

    def __init__(self, hidden, kernel_size, dropout, causal=False):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.pointwise_in = nn.Conv1d(hidden, 2 * hidden, 1)
        self.depthwise = conv1d(causal, hidden, hidden, kernel_size, groups=hidden)
        # batch-size independent, unlike BatchNorm; the streaming network's looks at one frame only
        self.mid_norm = FrameNorm(hidden) if causal else nn.GroupNorm(1, hidden)
        self.pointwise_out = nn.Conv1d(hidden, hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask):
        y = self.norm(x)
        if mask is not None:
            y = y.masked_fill(~mask[..., None], 0.0)
        y = F.glu(self.pointwise_in(y.transpose(1, 2)), dim=1)
        y = F.silu(self.mid_norm(self.depthwise(y)))
        return self.dropout(self.pointwise_out(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    """Macaron Conformer block: ½FFN → MHSA → Conv → ½FFN → LayerNorm (Gulati et al., 2020)."""

    def __init__(self, hidden, num_heads, ffn, kernel_size, dropout, causal=False):
        super().__init__()
        self.ffn1 = FeedForward(hidden, ffn, dropout)
        self.attn = SelfAttention(hidden, num_heads, dropout)
        self.conv = ConvModule(hidden, kernel_size, dropout, causal)
        self.ffn2 = FeedForward(hidden, ffn, dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x, mask=None, attn_mask=None):
        """``mask``: (B, N) True on real frames; ``attn_mask``: (B, 1, N, N) frames each frame may
        attend to (default: the real ones)."""
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attn(x, mask if attn_mask is None else attn_mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


class PoseAdaptor(nn.Module):
    """DAE-Talker's pose adaptor (after FastSpeech 2's variance adaptor).

    The *pose predictor* (two Conv1d → ReLU → LayerNorm → Dropout layers, then Linear) predicts
    normalised yaw/pitch/roll per frame; the *pose projector* embeds a pose and adds it back to the
    hidden states. During training the ground-truth pose is projected (teacher forcing); at
    inference the predicted pose, or a pose the user gives.
    """

    def __init__(self, hidden, channels, kernel_size, dropout, pose_dim=3, causal=False):
        super().__init__()
        self.conv1 = conv1d(causal, hidden, channels, kernel_size)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = conv1d(causal, channels, channels, kernel_size)
        self.norm2 = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.predictor_out = nn.Linear(channels, pose_dim)
        self.projector = nn.Linear(pose_dim, hidden)

    def predict(self, x):
        y = self.dropout(self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)))
        y = self.dropout(self.norm2(F.relu(self.conv2(y.transpose(1, 2))).transpose(1, 2)))
        return self.predictor_out(y)

    def forward(self, x, pose=None):
        """x (B, N, hidden); pose (B, N, 3) normalised or None → (x + embedding, predicted pose)."""
        predicted = self.predict(x)
        used = predicted if pose is None else pose.to(x.dtype)
        return x + self.projector(used), predicted


@dataclass
class Speech2LatentOutput(BaseOutput):
    """Per-frame outputs.

    latents: (B, N, latent_dim) in the normalised latent space (what training regresses).
    z_sem: (B, N, latent_dim) de-normalised, ready for the DAE decoder.
    pose: (B, N, 3) yaw/pitch/roll in degrees that the projector used (given, or predicted).
    predicted_pose: (B, N, 3) the pose predictor's output, normalised (what the pose loss sees).

    The fields after the first default to None, as diffusers' outputs do: accelerate's mixed
    precision rebuilds an output from its dict (``type(out)({...})``), which needs them optional.
    """

    latents: torch.Tensor
    z_sem: torch.Tensor | None = None
    pose: torch.Tensor | None = None
    predicted_pose: torch.Tensor | None = None


class Speech2Latent(ModelMixin, ConfigMixin):
    """Conformer speech2latent network with pose adaptor and emotion control.

    Args:
        audio_frontend: ``"mel"`` (log-mel, no weights) or ``"wav2vec2"`` (frozen audio encoder).
        feature_dim: size of one feature vector (80 mel bins; wav2vec2 hidden size).
        feature_rate: feature frames per second (100 for mel, 50 for wav2vec2).
        fps: video frames per second; ``feature_rate / fps`` must be a power of two.
        n_mels, n_fft, hop_length: log-mel settings when ``audio_frontend="mel"``.
        hidden_size, num_heads, ffn_size, conv_kernel_size: Conformer sizes.
        num_encoder_layers / num_decoder_layers: Conformer blocks before / after the pose adaptor.
        dropout: dropout in every block.
        latent_dim: size of ``z_sem`` (the DAE's latent).
        pose_predictor_channels, pose_predictor_kernel_size: pose predictor sizes.
        emotion_names: names of the emotion intensities, in vector order.
        feature_normalization: ``"dataset"`` (features standardised by the training data's
            statistics only) or ``"window"``: first, within every input window, log-mel is floored
            at ``feature_floor`` (natural-log units; 9.2 = 40 dB) below the window's peak and the
            time mean of each feature is subtracted, so that loudness, microphone and channel
            (and a recording's own noise floor far below the speech) do not change the input.
        feature_floor: see ``feature_normalization``.
        mel_floor: the smallest mel power before the log (1e-5 in earlier checkpoints; new ones
            use 1e-10 so that quiet recordings are not clipped before the window floor).
        voice_activity: the features carry one more, last channel: the probability that someone
            is speaking (``talker.vad``, Silero VAD), which skips the per-window normalisation and
            is added, averaged per video frame, after the subsampling. Lets the network keep the
            lips shut on noise its training data never had.
        mouth_readout: the network carries a linear read-out of mouth opening from ``z_sem``
            (``mouth_mean``, ``mouth_weight``, ``mouth_bias``) and the direction in which the
            data's ``z_sem`` moves as the mouth opens (``mouth_direction``), fitted by ``talker
            train s2l`` where the data has per-frame mouth truth. With ``voice_activity``,
            ``forward(..., shape_mouth=True)`` then moves each frame's ``z_sem`` along that
            direction (a linear edit of the semantic latent, as DiffAE edits attributes, leaving
            head pose and blinks): its read-out opening becomes ``mouth_gain`` × itself × the
            probability that someone is speaking, so lips shut where nobody speaks.
        mouth_gain: how much the edit scales predicted openings: a regression to the mean
            predicts openings smaller than the speaker makes; ``talker train s2l`` sets it so that
            on held-out clips the predicted openings spread as much as the true ones (1: as
            predicted).
        chunk_frames: 0 (the paper's bidirectional network) or C > 0: the streaming network,
            whose frames depend on the audio up to the end of their chunk of C frames only (see
            the module's docstring); ``DAETalkerPipeline.stream(..., live=True)`` needs one.
        emotion_directions: emotion is shown by moving ``z_sem`` along each emotion's direction
            in the speaker's latent space (``emotion_direction``, (E, latent_dim): where the
            speaker's own frames move per unit of that emotion, fitted by ``talker add-emotion``),
            intensity × direction, instead of through the network's emotion input: an intensity
            moves the face in proportion, emotions mix by adding, and zeros leave it neutral.
        emotion_knots: with ``emotion_directions``, how many offsets each emotion has along its
            intensity: 1, one direction (the offset is intensity × direction); K > 1,
            ``emotion_direction`` is (E, K, latent_dim), the offsets at intensities 1/K, 2/K … 1,
            and an intensity between two knots takes the straight line between their offsets
            (from zero below the first), so that a decoder which answers a straight direction
            unevenly can still show each intensity in proportion (:func:`emotion_knot_weights`).
    """

    @register_to_config
    def __init__(
        self,
        audio_frontend: str = "mel",
        feature_dim: int = 80,
        feature_rate: int = 100,
        fps: int = 25,
        n_mels: int = 80,
        n_fft: int = 400,
        hop_length: int = 160,
        hidden_size: int = 256,
        num_heads: int = 4,
        ffn_size: int = 1024,
        conv_kernel_size: int = 15,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        dropout: float = 0.1,
        latent_dim: int = 512,
        pose_predictor_channels: int = 256,
        pose_predictor_kernel_size: int = 5,
        emotion_names: tuple[str, ...] = EMOTIONS,
        feature_normalization: str = "dataset",
        feature_floor: float = 9.2,
        mel_floor: float = 1e-5,
        voice_activity: bool = False,
        mouth_readout: bool = False,
        mouth_gain: float = 1.0,
        chunk_frames: int = 0,
        emotion_directions: bool = False,
        emotion_knots: int = 1,
    ):
        super().__init__()
        if emotion_knots < 1:
            raise ValueError(f"emotion_knots must be at least 1, got {emotion_knots}")
        if chunk_frames < 0:
            raise ValueError(f"chunk_frames must be 0 (bidirectional) or a positive number of frames, got {chunk_frames}")
        causal = chunk_frames > 0
        if feature_normalization not in ("dataset", "window"):
            raise ValueError(f"feature_normalization must be 'dataset' or 'window', got {feature_normalization!r}")
        frontend_named(audio_frontend)  # an unknown front end fails here
        ratio = feature_rate / fps
        n_down = round(math.log2(ratio)) if ratio >= 1 else -1
        if n_down < 0 or 2**n_down != ratio:
            raise ValueError(f"feature_rate / fps must be a power of two, got {feature_rate}/{fps}")
        layers: list[nn.Module] = []
        ch = feature_dim
        for _ in range(n_down):
            layers += [nn.Conv1d(ch, hidden_size, 3, stride=2, padding=1), nn.SiLU()]
            ch = hidden_size
        # the strided convolutions see the features of their own frame only; the last one is causal
        # in the streaming network
        layers.append(conv1d(causal, ch, hidden_size, 3))
        self.subsample = nn.Sequential(*layers)
        self.voice_proj = None
        if voice_activity:
            self.voice_proj = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, hidden_size))
            nn.init.zeros_(self.voice_proj[2].weight)  # starts as a no-op (e.g. from weights without it)
            nn.init.zeros_(self.voice_proj[2].bias)
        self.emotion_proj = nn.Linear(len(emotion_names), hidden_size, bias=False) if emotion_names else None
        block = lambda: ConformerBlock(hidden_size, num_heads, ffn_size, conv_kernel_size, dropout, causal)  # noqa: E731
        self.encoder = nn.ModuleList(block() for _ in range(num_encoder_layers))
        self.pose_adaptor = PoseAdaptor(hidden_size, pose_predictor_channels, pose_predictor_kernel_size, dropout,
                                        causal=causal)
        self.decoder = nn.ModuleList(block() for _ in range(num_decoder_layers))
        self.out = nn.Linear(hidden_size, latent_dim)

        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("pose_mean", torch.zeros(3))
        self.register_buffer("pose_std", torch.ones(3))
        if mouth_readout:
            self.register_buffer("mouth_mean", torch.zeros(latent_dim))
            self.register_buffer("mouth_weight", torch.zeros(latent_dim))
            self.register_buffer("mouth_bias", torch.zeros(()))
            self.register_buffer("mouth_direction", torch.zeros(latent_dim))
        if emotion_directions:
            shape = (len(emotion_names), latent_dim) if emotion_knots == 1 else (len(emotion_names), emotion_knots, latent_dim)
            self.register_buffer("emotion_direction", torch.zeros(shape))

    @property
    def lookahead_ms(self) -> int:
        """How much audio after a frame the network hears at most: the rest of its chunk (0 for
        none; the bidirectional network hears its whole window)."""
        return (max(1, self.config.chunk_frames) - 1) * 1000 // self.config.fps

    @property
    def frames_per_feature(self) -> int:
        return self.config.feature_rate // self.config.fps

    # --- statistics ---------------------------------------------------------------------------

    def set_statistics(self, *, feature_mean=None, feature_std=None, latent_mean=None, latent_std=None,
                       pose_mean=None, pose_std=None) -> None:
        """Store dataset statistics (tensors or arrays) used to (de)normalise inputs and outputs."""
        for name, value in dict(feature_mean=feature_mean, feature_std=feature_std, latent_mean=latent_mean,
                                latent_std=latent_std, pose_mean=pose_mean, pose_std=pose_std).items():
            if value is not None:
                buf = getattr(self, name)
                value = torch.as_tensor(value, dtype=buf.dtype, device=buf.device).reshape(buf.shape)
                if name.endswith("std"):
                    value = value.clamp_min(1e-6)
                buf.copy_(value)

    def set_mouth_readout(self, mean, weight, bias: float, direction) -> None:
        """Store the read-out ``mouth_open ≈ (z_sem − mean) · weight + bias`` and the ``direction``
        z_sem moves per unit of mouth opening (needs ``mouth_readout``)."""
        if not self.config.mouth_readout:
            raise ValueError("this network was built without mouth_readout")
        for name, value in (("mouth_mean", mean), ("mouth_weight", weight), ("mouth_bias", bias),
                            ("mouth_direction", direction)):
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype, device=buf.device).reshape(buf.shape))

    def set_emotion_directions(self, directions) -> None:
        """(E, latent_dim): each emotion's direction in z_sem (per unit of intensity); with
        ``emotion_knots`` K > 1, (E, K, latent_dim): its offsets at intensities 1/K … 1."""
        if not self.config.emotion_directions:
            raise ValueError("this speech2latent shows emotion through its network (emotion_directions=False)")
        directions = torch.as_tensor(directions, dtype=self.emotion_direction.dtype)
        if directions.shape != self.emotion_direction.shape:
            raise ValueError(f"emotion directions must be {tuple(self.emotion_direction.shape)}; got {tuple(directions.shape)}")
        self.emotion_direction.copy_(directions.to(self.emotion_direction.device))

    def emotion_offset(self, emotion: torch.Tensor) -> torch.Tensor:
        """(..., E) intensities in [0, 1] → (..., latent_dim): how far they move z_sem."""
        table = self.emotion_direction.reshape(-1, self.emotion_direction.shape[-1])  # (E·K, D)
        weights = emotion_knot_weights(emotion.to(table.dtype), self.config.emotion_knots)
        return weights.flatten(-2) @ table

    def mouth_open(self, z_sem: torch.Tensor) -> torch.Tensor:
        """(..., D) z_sem → (...) mouth opening by the stored read-out."""
        return (z_sem - self.mouth_mean) @ self.mouth_weight + self.mouth_bias

    def scale_mouth(self, z_sem: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
        """Move (..., D) ``z_sem`` along ``mouth_direction`` so that its read-out mouth opening
        becomes ``factor`` (... or a number, ≥ 0) times itself (0: shut, read-out 0); only
        openings above 0 move."""
        unit = (self.mouth_direction @ self.mouth_weight).clamp_min(1e-6)  # read-out change per unit step
        opening = self.mouth_open(z_sem).clamp_min(0)
        return z_sem + ((factor - 1) * opening / unit)[..., None] * self.mouth_direction

    def split_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, F[+1]) features → (the audio features (B, T, feature_dim), P(speech) (B, T) or None)."""
        if self.voice_proj is None:
            return features, None
        if features.shape[-1] != self.config.feature_dim + 1:
            raise ValueError(f"features must have {self.config.feature_dim} + 1 (voice activity) channels; "
                             f"got {features.shape[-1]}")
        return features[..., :-1], features[..., -1]

    def normalize_window(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-window normalisation (``feature_normalization="window"``; identity otherwise).

        Args:
            features: (B, T, F) raw features of one window each.
            mask: optional (B, N) bool over video frames, True on real frames.
        """
        if self.config.feature_normalization != "window":
            return features
        if mask is None:
            valid = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        else:
            valid = mask.repeat_interleave(self.frames_per_feature, dim=1)[:, : features.shape[1]]
        m = valid[..., None].to(features.dtype)
        x = features
        streaming = self.config.chunk_frames > 0  # statistics of the window so far: running ones
        if self.config.audio_frontend == "mel":
            peak = x.masked_fill(~valid[..., None], float("-inf")).amax(dim=2, keepdim=True)
            peak = peak.cummax(dim=1).values if streaming else peak.amax(dim=1, keepdim=True)
            x = torch.maximum(x, peak - self.config.feature_floor)
        if streaming:
            mean = (x * m).cumsum(1) / m.cumsum(1).clamp_min(1.0)
        else:
            mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
        return (x - mean) * m

    def normalize_pose(self, pose_degrees: torch.Tensor) -> torch.Tensor:
        return (pose_degrees - self.pose_mean) / self.pose_std

    def pose_to_degrees(self, pose: torch.Tensor) -> torch.Tensor:
        return pose * self.pose_std + self.pose_mean

    def normalize_latents(self, z_sem: torch.Tensor) -> torch.Tensor:
        return (z_sem - self.latent_mean) / self.latent_std

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std + self.latent_mean

    # --- forward ------------------------------------------------------------------------------

    def chunk_mask(self, n: int, mask: torch.Tensor | None, device) -> torch.Tensor | None:
        """(B or 1, 1, n, n) True where frame i may attend to frame j: the streaming network's
        frames see their own chunk and the ones before; None for the bidirectional network."""
        c = self.config.chunk_frames
        if c <= 0:
            return None
        chunk = torch.arange(n, device=device) // c
        allowed = (chunk[None, :] <= chunk[:, None])[None, None]
        return allowed if mask is None else allowed & mask[:, None, None, :]

    def forward(
        self,
        features: torch.Tensor,
        pose: torch.Tensor | None = None,
        emotion: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_dict: bool = True,
        shape_mouth: bool = False,
        speaking: torch.Tensor | None = None,
    ) -> Speech2LatentOutput | tuple:
        """Predict latents and poses.

        Args:
            features: (B, N × feature_rate / fps, feature_dim) raw (un-normalised) audio features,
                with P(speech) as one more channel when ``voice_activity``.
            pose: optional (B, N, 3) yaw/pitch/roll in degrees fed to the pose projector instead of
                the predicted pose (ground truth in training, a user's pose at inference).
            emotion: optional (B, E) or (B, N, E) intensities in [0, 1]; zeros (or None) = neutral.
            mask: optional (B, N) bool, True on real frames (for padded batches).
            shape_mouth: with ``voice_activity`` and ``mouth_readout``, scale each frame's mouth
                opening by ``mouth_gain`` × P(speech): shut where nobody speaks (what the
                pipeline does).
            speaking: optional (B, N) probabilities in [0, 1] that a foreground voice speaks
                (:class:`~talker.models.VoiceGate`); with ``shape_mouth``, they scale the mouth
                opening too: shut on babble that the voice-activity input hears as speech.
        """
        dtype = self.out.weight.dtype
        features, voice = self.split_features(features.to(dtype))
        x = (self.normalize_window(features, mask) - self.feature_mean) / self.feature_std
        x = self.subsample(x.transpose(1, 2)).transpose(1, 2)  # (B, N, hidden)
        per_frame = None
        if voice is not None:
            per_frame = voice[:, : x.shape[1] * self.frames_per_feature].reshape(x.shape[0], x.shape[1], -1).mean(-1)
            x = x + self.voice_proj(per_frame[..., None])
        e = None if emotion is None else emotion.to(dtype)
        e = None if e is None else (e if e.dim() == 3 else e[:, None, :])  # (B, N or 1, E)
        if self.emotion_proj is not None and e is not None and not self.config.emotion_directions:
            x = x + self.emotion_proj(e)
        attn_mask = self.chunk_mask(x.shape[1], mask, x.device)
        for layer in self.encoder:
            x = layer(x, mask, attn_mask)
        pose_in = None if pose is None else self.normalize_pose(pose.to(dtype))
        x, predicted = self.pose_adaptor(x, pose_in)
        for layer in self.decoder:
            x = layer(x, mask, attn_mask)
        latents = self.out(x)
        z_sem = self.denormalize_latents(latents)
        if shape_mouth and per_frame is not None and self.config.mouth_readout:
            scale = self.config.mouth_gain * per_frame.clamp(0, 1)
            if speaking is not None:
                scale = scale * speaking.to(scale)[:, : scale.shape[1]].clamp(0, 1)
            z_sem = self.scale_mouth(z_sem, scale)
            latents = self.normalize_latents(z_sem)
        if self.config.emotion_directions and e is not None:
            z_sem = z_sem + self.emotion_offset(e)
            latents = self.normalize_latents(z_sem)
        used = predicted if pose is None else pose_in
        out = Speech2LatentOutput(
            latents=latents,
            z_sem=z_sem,
            pose=self.pose_to_degrees(used),
            predicted_pose=predicted,
        )
        return out if return_dict else out.to_tuple()
