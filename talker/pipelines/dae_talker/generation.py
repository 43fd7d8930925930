"""The generation loop shared by ``__call__``, ``generate_video`` and ``stream``: audio chunks in,
batches of decoded frames out, in order, as soon as they are final.

speech2latent runs on overlapping windows of the audio heard so far (:mod:`.windows`), whose
outputs are cross-faded into one latent and one pose per frame; every batch of final latents is
decoded from the video's one fixed noise image (and refined, where the speaker has a refiner).
Where the speaker has a voice gate, the gate hears ``GATE_CONTEXT`` frames more on each side of
a window (a crowd is told from one voice by seconds of it, and the frames near a window's edges
have little of it inside the window), so a stream runs each window once that much audio beyond
it is in. Memory holds only the audio and latents not yet final, plus one batch.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from ..ddim import ddim_decode
from .incoming import FrameAudio, incoming_audio
from .inputs import Settings
from .windows import GATE_CONTEXT, CrossFader, runnable_windows


@dataclass
class DAETalkerOutput(BaseOutput):
    """Result of one generation.

    frames: "np": (N, H, W, 3) uint8; "pil": N PIL images; "pt": (N, 3, H, W) float in [0, 1].
    poses: (N, 3) yaw, pitch, roll in degrees (predicted, static or the reference used).
    latents: (N, D) the semantic latents z_sem that were decoded.
    fps: frames per second of ``frames``.
    fixed_noise: (1, 3, H, W) the noise image x_T shared by every frame.
    """

    frames: np.ndarray | list | torch.Tensor
    poses: np.ndarray | torch.Tensor
    latents: np.ndarray | torch.Tensor
    fps: int
    fixed_noise: torch.Tensor


def generate_frames(pipe, chunks: Iterable, sampling_rate: int, settings: Settings, window: int, overlap: int,
                    tick: Callable[[], None] | None = None, first_batch: int | None = None,
                    max_duration: float | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Audio chunks → (images (B, 3, H, W) in [-1, 1], z_sem (B, D), poses (B, 3)) batches of
    ``settings.frame_batch_size`` frames (the first only ``first_batch``, so a stream shows its
    first frame early); ``tick`` is called once per denoising step of a batch."""
    audio, fader = FrameAudio(pipe.fps), CrossFader(overlap)
    next_start = 0  # the next window's first frame
    ready = Ready(settings.frame_batch_size, first_batch)
    context = GATE_CONTEXT if pipe.voice_gate is not None else 0
    for samples, n_frames in incoming_audio(chunks, sampling_rate, pipe.fps, max_duration):
        audio.extend(samples, n_frames)
        usable = audio.heard if audio.ended else max(0, audio.heard - context)  # the gate's context is in
        for start, end, last in runnable_windows(next_start, usable, audio.ended, window, overlap):
            pose_t = pipe.prepare_pose(settings.pose_mode, settings.pose, end)
            around = max(audio.first, start - context), min(audio.heard, end + context)
            out = pipe.predict_latents(audio.frames(start, end), end - start,
                                       None if pose_t is None else pose_t[:, start:end], settings.emotion,
                                       gate_context=(audio.frames(*around), start - around[0]) if context else None)
            fader.add(start, out, first=start == 0, last=last)
            ready.add(fader.pop(end if last else start + window - overlap))
            next_start = start + window - overlap
            # the next window starts there; its gate hears from `context` frames before
            audio.forget_before(max(0, min(next_start, audio.heard) - context))
        if audio.ended:  # frames the last window ended on, if it was run before the end was known
            ready.add(fader.pop(audio.heard))
        while ready.count and (ready.count >= ready.next_batch or audio.ended):
            z, p = ready.take(ready.next_batch)
            yield decode_latents(pipe, z, settings, tick), z, p


class Ready:
    """The final latents and poses not yet decoded, taken in batches of ``batch`` frames (the
    first of at most ``first_batch``)."""

    def __init__(self, batch: int, first_batch: int | None = None):
        self.batch, self.first_batch = batch, first_batch
        self.z, self.p, self.count, self.emitted = [], [], 0, 0

    def add(self, final: dict[str, torch.Tensor]) -> None:
        if final and final["z_sem"].shape[0]:
            self.z.append(final["z_sem"])
            self.p.append(final["pose"])
            self.count += final["z_sem"].shape[0]

    @property
    def next_batch(self) -> int:
        return self.batch if self.first_batch is None or self.emitted else min(self.batch, self.first_batch)

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``n`` frames' latents and poses, copies of their own: a caller that keeps
        every batch (``generate_video``'s record of the latents) keeps only those frames, not
        every latent that was waiting when it was taken (which grew with the square of the audio's
        length)."""
        z, p = torch.cat(self.z), torch.cat(self.p)
        self.z, self.p = ([z[n:]], [p[n:]]) if n < z.shape[0] else ([], [])
        self.count = z.shape[0] - min(n, z.shape[0])
        self.emitted += min(n, z.shape[0])
        return z[:n].clone(), p[:n].clone()


@torch.no_grad()
def decode_latents(pipe, z: torch.Tensor, settings: Settings, tick: Callable[[], None] | None = None) -> torch.Tensor:
    """(B, D) latents → (B, 3, H, W) frames in [-1, 1]: DDIM from the fixed noise image with the
    chosen decoder (given the emotion too, where it takes it), the refiner where the speaker has
    one and ``settings.refine``, then the expression warp where the speaker has one: its move is
    read off the refined frames scaled down to the decoder's side and applied to them (the
    refiner, which warps the detail of a neutral reference frame, would pull a warped face part
    of the way back: bench/results/emotion_warp_before_refiner.json against
    emotion_warp_truth64.json). No gradients: a caller outside the pipeline's own no-grad calls
    (a benchmark rendering whole clips) keeps no graph of every batch."""
    decoded = ddim_decode(settings.unet, settings.scheduler, z.to(settings.x_T.device), settings.x_T, settings.steps,
                          z.shape[0], tick, precision=pipe.precision, emotion=settings.emotion)
    images = pipe.refine_frames(decoded, settings.refiner) if settings.refine else decoded
    images = pipe.express_frames(decoded, settings.emotion, onto=images)
    release_free_heap()
    return images


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):  # another C library: nothing to do
        return None


TRIM_INTERVAL_S = 1.0  # the shortest time between two trims


def release_free_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``), once a batch is
    decoded, at most once every ``TRIM_INTERVAL_S``. The convolutions' channels-last buffers leave
    free holes in glibc's heap that it does not return by itself: without this the bundled
    speaker's resident memory climbed to 2.5 GB over 3 minutes of speech; with it, it stays near
    1 GB (bench/speed.py's memory section compares 10 and 60 s). Live input decodes a chunk every
    120 ms, and a trim after each cost it about a tenth of its time (bench/live.py)."""
    global _last_trim
    trim = _malloc_trim()
    now = time.monotonic()
    if trim is not None and now - _last_trim >= TRIM_INTERVAL_S:
        trim(0)
        _last_trim = now


_last_trim = float("-inf")
