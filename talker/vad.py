"""Voice activity: the probability that someone is speaking, from Silero VAD.

Silero VAD (https://github.com/snakers4/silero-vad, MIT) is a small STFT + CNN + LSTM network
trained on thousands of hours of speech, noise and music in many languages. Its PyPI wheel ships
the 16 kHz weights as safetensors (``silero_vad/data/silero_vad_16k.safetensors``); this module
runs them in torch with the same layers as the wheel's reference port (``tinygrad_model.py``):
every 512-sample chunk (32 ms at 16 kHz) is read with the 64 samples before it and carries the LSTM state
forward. The package itself is not imported (its ``__init__`` sets torch to one thread).

speech2latent uses the probability as one more input channel (``voice_activity=True``): a signal
learned from far more voices and noises than a speaker's training data, so that room noise,
hum or a codec's hiss alone do not open the lips.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio import SAMPLES_PER_FRAME, samples_for_frames
from .errors import CheckpointError

CHUNK = 512
"""Samples per VAD decision at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous chunk read with each chunk."""
WEIGHTS = "silero_vad_16k.safetensors"


class SileroVAD(nn.Module):
    """Silero VAD v6 at 16 kHz: (B, CONTEXT + CHUNK) samples and an LSTM state → P(speech)."""

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)  # real and imaginary parts
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, CONTEXT + CHUNK) samples → (B, 128) chunk features (independent per chunk)."""
        x = nn.functional.pad(x[:, None], (0, 64), mode="reflect")
        x = self.stft_conv(x)
        magnitude = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
        h = torch.relu(self.conv1(magnitude))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return torch.relu(self.conv4(h)).squeeze(-1)

    def step(self, features: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        """One chunk's features (B, 128) and the state → (P(speech) (B,), new state)."""
        h, c = self.lstm_cell(features, state)
        p = torch.sigmoid(self.final_conv(torch.relu(h)[..., None]))
        return p[:, 0, 0], (h, c)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) 16 kHz samples → (B, ceil(T / CHUNK)) speech probabilities, one per chunk,
        the state starting empty at sample 0."""
        n = -(-wave.shape[1] // CHUNK)
        x = nn.functional.pad(wave.float(), (CONTEXT, n * CHUNK - wave.shape[1]))
        chunks = x.unfold(1, CONTEXT + CHUNK, CHUNK)  # (B, n, CONTEXT + CHUNK)
        feats = self.encode(chunks.reshape(-1, CONTEXT + CHUNK)).reshape(wave.shape[0], n, -1)
        state, probs = None, []
        for t in range(n):
            p, state = self.step(feats[:, t], state)
            probs.append(p)
        return torch.stack(probs, 1)


def weights_path() -> Path:
    """The safetensors weights inside the installed ``silero-vad`` wheel."""
    spec = importlib.util.find_spec("silero_vad")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("voice activity needs the silero-vad package: pip install silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"the installed silero-vad has no {WEIGHTS}; install silero-vad>=6")
    return path


@functools.cache
def load_vad() -> SileroVAD:
    """The Silero VAD network, loaded once per process (float32, CPU, eval)."""
    from safetensors.torch import load_file

    model = SileroVAD()
    model.load_state_dict(load_file(weights_path()))
    return model.eval().requires_grad_(False)


def speech_probability(wave: np.ndarray | torch.Tensor, n_frames: int, length: int) -> torch.Tensor:
    """P(speech) of 16 kHz mono ``wave`` over ``n_frames`` video frames (cut or zero-padded to
    them, as the speech features are), at ``length`` evenly spaced times (e.g. ``4 × n_frames``
    for 100 Hz features): (length,) float32 in [0, 1], the 32-ms chunks' probabilities linearly
    interpolated between chunk centres."""
    n = n_frames * SAMPLES_PER_FRAME
    probs = load_vad()(samples_for_frames(wave, n_frames)[None])[0]
    centres = (np.arange(len(probs)) + 0.5) * CHUNK
    times = (np.arange(length) + 0.5) * (n / length)
    return torch.from_numpy(np.interp(times, centres, probs.numpy()).astype(np.float32))


class VoiceActivityStream:
    """P(speech) of 16 kHz samples that arrive a part at a time (live input): each complete
    512-sample chunk is read once, carrying the LSTM state on; the chunk still being filled is read
    zero-padded, without keeping its state. So after :meth:`extend` with the samples of frames
    [0, n), :meth:`probability` gives what :func:`speech_probability` gives on those samples."""

    def __init__(self):
        self.model = load_vad()
        self.context = torch.zeros(CONTEXT)  # the samples before the chunk being filled
        self.pending = torch.zeros(0)  # the samples of the chunk being filled
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.probs: list[float] = []  # the complete chunks' that later rows may still read
        self.first_prob = 0  # the chunk of probs[0]

    @torch.no_grad()
    def extend(self, samples: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).flatten()
        buf = torch.cat([self.pending, x])
        n = buf.numel() // CHUNK
        if n:
            seq = torch.cat([self.context, buf[: n * CHUNK]])
            feats = self.model.encode(seq.unfold(0, CONTEXT + CHUNK, CHUNK))
            for t in range(n):
                p, self.state = self.model.step(feats[t : t + 1], self.state)
                self.probs.append(float(p))
            self.context = seq[-CONTEXT:]
        self.pending = buf[n * CHUNK :]

    @torch.no_grad()
    def probability(self, first_row: int, end_row: int, rows_per_frame: int) -> torch.Tensor:
        """(end_row − first_row,) P(speech) at feature rows [first_row, end_row) of
        ``rows_per_frame`` rows per video frame, interpolated as :func:`speech_probability` does.
        Rows are asked for in order: the chunks before the one just before ``first_row`` are
        forgotten, so a call costs the same however long the stream."""
        times = (np.arange(first_row, end_row) + 0.5) * (SAMPLES_PER_FRAME / rows_per_frame)
        keep_from = max(0, int(times[0] // CHUNK) - 1)  # its centre is before the first time asked
        del self.probs[: max(0, keep_from - self.first_prob)]
        self.first_prob = max(self.first_prob, keep_from)
        probs = list(self.probs)
        if self.pending.numel():
            last = torch.cat([self.context, nn.functional.pad(self.pending, (0, CHUNK - self.pending.numel()))])
            p, _ = self.model.step(self.model.encode(last[None]), self.state)
            probs.append(float(p))
        centres = (np.arange(len(probs)) + self.first_prob + 0.5) * CHUNK
        return torch.from_numpy(np.interp(times, centres, probs).astype(np.float32))


def append_voice_activity(features: torch.Tensor, wave: np.ndarray | torch.Tensor, n_frames: int) -> torch.Tensor:
    """(T, F) speech features of ``wave`` over ``n_frames`` frames → (T, F + 1): P(speech) as
    the last channel (speech2latent's ``voice_activity`` input)."""
    p = speech_probability(wave, n_frames, features.shape[0]).to(features.device, features.dtype)
    return torch.cat([features, p[:, None]], dim=1)


__all__ = ["CHUNK", "CONTEXT", "SileroVAD", "VoiceActivityStream", "append_voice_activity", "load_vad", "speech_probability", "weights_path"]
