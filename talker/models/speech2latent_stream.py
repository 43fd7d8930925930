"""A streaming speech2latent's state carried from chunk to chunk, for live input.

A streaming :class:`~talker.models.speech2latent.Speech2Latent` (``chunk_frames`` = C > 0) computes
a frame from the audio up to the end of its chunk. Recomputing its whole history for every new
chunk costs the history's length each time; :class:`Speech2LatentStream` instead keeps what the
next chunk needs, as streaming recognisers do:

- the window normalisation's running peak and mean (over the last ``memory_frames`` frames);
- one video frame of normalised features for the strided subsampling, and the inputs each causal
  convolution still reads (its kernel − 1 frames);
- every attention layer's keys and values of the last ``memory_frames`` frames (kept unrotated:
  rotary positions are relative, so they are applied from the cache's start at each step).

:meth:`Speech2LatentStream.step` takes the features of the next frames (a chunk, or the last, shorter
one) and returns their outputs. While the stream is no longer than ``memory_frames`` these are what
the network's ``forward`` gives on all the features so far (the test suite checks it); after that
attention and the normalisation reach back ``memory_frames`` frames, so each step costs the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .speech2latent import ConformerBlock, ConvModule, PoseAdaptor, Speech2Latent, Speech2LatentOutput, _rotary


def _causal(conv: torch.nn.Conv1d, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal Conv1d on (B, C, t) new inputs, after ``past`` (its last (kernel − 1) × dilation
    inputs, zeros at the start, as its left padding) → (output (B, C', t), the new past)."""
    seq = torch.cat([past, x], dim=2)
    y = F.conv1d(seq, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
    return y, seq[:, :, seq.shape[2] - past.shape[2] :]


def _zeros_past(conv: torch.nn.Conv1d, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(like.shape[0], conv.in_channels, (conv.kernel_size[0] - 1) * conv.dilation[0])


class _BlockState:
    """One Conformer block's cache: attention keys and values (B, heads, ≤ memory, d), unrotated,
    and the depthwise convolution's past inputs."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.conv_past: torch.Tensor | None = None


class Speech2LatentStream:
    """The state of one live stream through ``model`` (a streaming Speech2Latent in eval mode).

    Args:
        model: the streaming network (``chunk_frames`` > 0).
        memory_frames: how many frames back attention and the window normalisation reach.
    """

    def __init__(self, model: Speech2Latent, memory_frames: int):
        if model.config.chunk_frames <= 0:
            raise ValueError("only a streaming speech2latent (chunk_frames > 0) carries a state across chunks")
        if model.training:
            raise ValueError("stream a speech2latent in eval mode (model.eval())")
        if memory_frames < model.config.chunk_frames:
            raise ValueError(f"memory_frames must be at least one chunk ({model.config.chunk_frames}); got {memory_frames}")
        self.model, self.memory = model, memory_frames
        self.frames = 0  # frames stepped so far
        rows = memory_frames * model.frames_per_feature
        self.norm_rows = rows  # feature rows the window normalisation reaches back
        self.peaks: torch.Tensor | None = None  # (B, < rows) the last rows' peaks (mel)
        self.floored: torch.Tensor | None = None  # (B, < rows, F) the last rows, floored at their peak
        self.feature_past: torch.Tensor | None = None  # (B, rows per frame, F) normalised, for the subsampling
        self.subsample_past: torch.Tensor | None = None
        self.blocks = [_BlockState() for _ in [*model.encoder, *model.decoder]]
        self.pose_past: list[torch.Tensor | None] = [None, None]

    # --- the input side -----------------------------------------------------------------------

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The streaming window normalisation of (B, n, F) new rows, from the running statistics."""
        m = self.model
        if m.config.feature_normalization != "window":
            return x
        keep = self.norm_rows - 1
        if m.config.audio_frontend == "mel":
            peaks = x.amax(dim=2)
            seq = peaks if self.peaks is None else torch.cat([self.peaks, peaks], 1)
            pad = max(0, keep + x.shape[1] - seq.shape[1])
            window_peak = F.pad(seq, (pad, 0), value=float("-inf")).unfold(1, self.norm_rows, 1).amax(-1)
            x = torch.maximum(x, window_peak[..., None] - m.config.feature_floor)
            self.peaks = seq[:, -keep:] if keep else seq[:, :0]
        seq = x if self.floored is None else torch.cat([self.floored, x], 1)
        pad = max(0, keep + x.shape[1] - seq.shape[1])
        sums = F.pad(seq, (0, 0, pad, 0)).unfold(1, self.norm_rows, 1).sum(-1)  # (B, n, F)
        seen = self.frames * m.frames_per_feature + torch.arange(1, x.shape[1] + 1, device=x.device)
        mean = sums / seen.clamp_max(self.norm_rows).to(x.dtype)[None, :, None]
        self.floored = seq[:, -keep:] if keep else seq[:, :0]
        return x - mean

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n × rows per frame, F) normalised rows → (B, n, hidden): the strided convolutions
        on the new rows after one frame of the past ones (whose output is dropped), then the
        causal convolution."""
        layers, rows = self.model.subsample, self.model.frames_per_feature
        seq = x if self.feature_past is None else torch.cat([self.feature_past, x], 1)
        y = layers[:-1](seq.transpose(1, 2))[:, :, (seq.shape[1] - x.shape[1]) // rows :]
        self.feature_past = seq[:, -rows:]
        last = layers[-1]
        if self.subsample_past is None:
            self.subsample_past = _zeros_past(last, y)
        y, self.subsample_past = _causal(last, y, self.subsample_past)
        return y.transpose(1, 2)

    # --- the blocks ---------------------------------------------------------------------------

    def _attention(self, block: ConformerBlock, x: torch.Tensor, state: _BlockState) -> torch.Tensor:
        attn = block.attn
        b, t, h = x.shape
        q, k, v = attn.qkv(attn.norm(x)).reshape(b, t, 3, attn.num_heads, h // attn.num_heads).permute(2, 0, 3, 1, 4)
        keys = k if state.keys is None else torch.cat([state.keys, k], 2)
        values = v if state.values is None else torch.cat([state.values, v], 2)
        first = keys.shape[2] - t  # the new frames' place in the cache; a step is within one chunk,
        # so each of its frames sees all of them and the cache: no mask
        y = F.scaled_dot_product_attention(_rotary(q, first), _rotary(keys), values)
        state.keys, state.values = keys[:, :, -self.memory :], values[:, :, -self.memory :]
        return attn.out(y.transpose(1, 2).reshape(b, t, h))

    def _conv(self, conv: ConvModule, x: torch.Tensor, state: _BlockState) -> torch.Tensor:
        # the pointwise convolutions as the linear maps they are, on (B, t, C): on a few frames
        # a Conv1d of kernel 1 takes a slow path
        y = F.glu(F.linear(conv.norm(x), conv.pointwise_in.weight[:, :, 0], conv.pointwise_in.bias), dim=-1)
        y = y.transpose(1, 2)
        if state.conv_past is None:
            state.conv_past = _zeros_past(conv.depthwise, y)
        y, state.conv_past = _causal(conv.depthwise, y, state.conv_past)
        y = F.silu(F.layer_norm(y.transpose(1, 2), conv.mid_norm.normalized_shape, conv.mid_norm.weight,
                                conv.mid_norm.bias, conv.mid_norm.eps))  # FrameNorm: per frame
        return F.linear(y, conv.pointwise_out.weight[:, :, 0], conv.pointwise_out.bias)

    def _block(self, block: ConformerBlock, x: torch.Tensor, state: _BlockState) -> torch.Tensor:
        x = x + 0.5 * block.ffn1(x)
        x = x + self._attention(block, x, state)
        x = x + self._conv(block.conv, x, state)
        x = x + 0.5 * block.ffn2(x)
        return block.norm(x)

    def _predict_pose(self, adaptor: PoseAdaptor, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for i, (conv, norm) in enumerate(((adaptor.conv1, adaptor.norm1), (adaptor.conv2, adaptor.norm2))):
            if self.pose_past[i] is None:
                self.pose_past[i] = _zeros_past(conv, y)
            y, self.pose_past[i] = _causal(conv, y, self.pose_past[i])
            y = norm(F.relu(y).transpose(1, 2)).transpose(1, 2)
        return adaptor.predictor_out(y.transpose(1, 2))

    # --- one step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, features: torch.Tensor, pose: torch.Tensor | None = None, emotion: torch.Tensor | None = None,
             shape_mouth: bool = False) -> Speech2LatentOutput:
        """The next frames: ``features`` (B, n × feature_rate / fps, F [+ 1]) raw, as ``forward``
        takes them; ``pose`` (B, n, 3) degrees or None (predicted); ``emotion`` (B, E) or
        (B, n, E) or None. A step holds at most one chunk, aligned to the chunks (the last one may
        be shorter: the stream ends there). Returns ``forward``'s outputs for the n frames."""
        m = self.model
        n = features.shape[1] // m.frames_per_feature
        c = m.config.chunk_frames
        if n < 1 or features.shape[1] != n * m.frames_per_feature:
            raise ValueError(f"a step takes whole frames of features ({m.frames_per_feature} rows each); got {features.shape[1]}")
        if self.frames % c or n > c:
            raise ValueError(f"a step is one chunk of at most {c} frames starting on a chunk; got {n} at frame {self.frames}")
        dtype = m.out.weight.dtype
        feats, voice = m.split_features(features.to(dtype))
        x = (self._normalize(feats) - m.feature_mean) / m.feature_std
        x = self._subsample(x)
        per_frame = None
        if voice is not None:
            per_frame = voice.reshape(x.shape[0], n, -1).mean(-1)
            x = x + m.voice_proj(per_frame[..., None])
        e = None if emotion is None else emotion.to(dtype)
        e = None if e is None else (e if e.dim() == 3 else e[:, None, :])
        if m.emotion_proj is not None and e is not None and not m.config.emotion_directions:
            x = x + m.emotion_proj(e)
        states = iter(self.blocks)
        for block in m.encoder:
            x = self._block(block, x, next(states))
        predicted = self._predict_pose(m.pose_adaptor, x)
        pose_in = None if pose is None else m.normalize_pose(pose.to(dtype))
        used = predicted if pose_in is None else pose_in
        x = x + m.pose_adaptor.projector(used)
        for block in m.decoder:
            x = self._block(block, x, next(states))
        z_sem = m.denormalize_latents(m.out(x))
        if shape_mouth and per_frame is not None and m.config.mouth_readout:
            z_sem = m.scale_mouth(z_sem, m.config.mouth_gain * per_frame.clamp(0, 1))
        if m.config.emotion_directions and e is not None:
            z_sem = z_sem + m.emotion_offset(e)
        self.frames += n
        return Speech2LatentOutput(latents=m.normalize_latents(z_sem), z_sem=z_sem, pose=m.pose_to_degrees(used),
                                   predicted_pose=predicted)


__all__ = ["Speech2LatentStream"]
