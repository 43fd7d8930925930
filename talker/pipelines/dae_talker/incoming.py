"""Streamed audio in: chunks of any size and rate → 16 kHz mono samples as they come, shared by
``stream``'s windowed generation and live generation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ...audio import MAX_PEAK, SAMPLE_RATE, as_float_array, to_mono
from ...errors import AudioError


class AudioIntake:
    """Streamed audio pushed in a chunk at a time: each chunk → its samples at 16 kHz (resampled as
    they come, so a few may arrive with the next chunk); :meth:`end` → what the resampler still held
    and the stream's frame count. Raises :class:`AudioError` for chunks that are not audio, input
    longer than ``max_duration`` seconds, or shorter than a frame."""

    def __init__(self, sampling_rate: int, fps: int, max_duration: float | None = None):
        self.sampling_rate, self.fps, self.max_duration = sampling_rate, fps, max_duration
        self.resampler = None
        if sampling_rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(sampling_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        self.total_in = 0

    def push(self, chunk: Any) -> np.ndarray:
        samples = stream_chunk(chunk)
        self.total_in += samples.shape[0]
        if self.max_duration is not None and self.total_in / self.sampling_rate > self.max_duration:
            raise AudioError(f"the audio is longer than the {self.max_duration:g} s accepted")
        return self.resampler.resample_chunk(samples) if self.resampler is not None else samples

    def end(self) -> tuple[np.ndarray, int]:
        n_frames = self.total_in * self.fps // self.sampling_rate
        if n_frames < 1:
            raise AudioError("the audio is shorter than one video frame" if self.total_in else "the audio stream was empty")
        empty = np.zeros(0, np.float32)
        return (self.resampler.resample_chunk(empty, last=True) if self.resampler is not None else empty), n_frames


def incoming_audio(chunks: Iterable[Any], sampling_rate: int, fps: int,
                   max_duration: float | None = None) -> Iterator[tuple[np.ndarray, int | None]]:
    """:class:`AudioIntake` over an iterable: ``(samples, None)`` per chunk, then ``(tail, n_frames)``."""
    intake = AudioIntake(sampling_rate, fps, max_duration)
    for chunk in chunks:
        yield intake.push(chunk), None
    yield intake.end()


def stream_chunk(chunk: Any) -> np.ndarray:
    """One streamed audio chunk → mono float32 samples."""
    if not isinstance(chunk, (np.ndarray, torch.Tensor, list, tuple)):
        raise AudioError(f"audio chunks must be numpy arrays or tensors of samples; got {type(chunk).__name__}")
    samples = to_mono(as_float_array(chunk))
    if not np.isfinite(samples).all():
        raise AudioError("an audio chunk contains NaN or infinite samples")
    if samples.size and np.abs(samples).max() > MAX_PEAK:
        raise AudioError(f"an audio chunk reaches {np.abs(samples).max():.4g}; float audio is in [-1, 1]")
    return np.ascontiguousarray(np.clip(samples, -1, 1), dtype=np.float32)


class FrameAudio:
    """The 16 kHz samples of a stream that generation still needs, addressed by video frame."""

    def __init__(self, fps: int):
        self.spf = SAMPLE_RATE // fps  # samples per frame
        self.wave = np.zeros(0, dtype=np.float32)  # samples from frame `first` on
        self.first = 0
        self.total: int | None = None  # the stream's frame count, once it has ended

    def extend(self, samples: np.ndarray, n_frames: int | None) -> None:
        """Append what :func:`incoming_audio` yielded (at the end, pad to the last frame)."""
        if samples.size:
            self.wave = np.concatenate([self.wave, samples.astype(np.float32, copy=False)])
        if n_frames is not None:
            self.total = n_frames
            self.wave = np.pad(self.wave, (0, max(0, (n_frames - self.first) * self.spf - self.wave.shape[0])))

    @property
    def ended(self) -> bool:
        return self.total is not None

    @property
    def heard(self) -> int:
        """Frames whose audio is all in (every frame, once the stream has ended)."""
        return self.total if self.total is not None else self.first + self.wave.shape[0] // self.spf

    def frames(self, start: int, end: int) -> np.ndarray:
        """The samples of frames [start, end)."""
        return self.wave[(start - self.first) * self.spf : (end - self.first) * self.spf]

    def forget_before(self, frame: int) -> None:
        """Drop the samples of the frames before ``frame`` (no longer needed)."""
        if frame > self.first:
            self.wave = self.wave[(frame - self.first) * self.spf :]
            self.first = frame
