"""Live generation: audio chunks in, each frame out as soon as its audio has arrived.

A streaming speech2latent (``chunk_frames`` = C > 0) hears the audio of a frame's chunk of C
frames and before, never after. So as soon as the audio of frames [t, t + C) is in, they are
computed: speech2latent on the last ``context_frames`` of audio (its training windows' length;
the network's frames see their own chunk and the past, so the newest C frames are exactly what
it computes for them), then the C latents are decoded together from the video's one fixed noise
image. A frame therefore waits at most C − 1 frames of audio (the look-ahead) plus the time to
compute its chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ...audio import SAMPLE_RATE
from ...errors import AudioError, InputError
from ..ddim import ddim_decode


def check_live(s2l) -> int:
    """The speaker's chunk length C; an InputError when its speech2latent does not stream."""
    c = getattr(s2l.config, "chunk_frames", 0)
    if not c:
        raise InputError("live=True needs a streaming speech2latent (`talker train s2l --chunk-frames C`, added to a "
                         "speaker with `talker export --live-s2l`); this speaker's needs whole 4-s windows: use live=False")
    return c


def live_frames(pipe, chunks: Iterable[Any], sampling_rate: int, num_inference_steps: int, pose_mode: str, pose: Any,
                emotion_t, x_T: torch.Tensor, context_frames: int, decoder: str | None, refine: bool,
                max_duration: float | None, to_samples) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images (B, 3, H, W) in [-1, 1], z_sem (B, D), poses (B, 3)) for each chunk of frames, as
    soon as its audio is in. ``to_samples`` turns one input chunk into mono float32 samples."""
    s2l = pipe.streaming_speech_to_latent
    c = check_live(s2l)
    context = max(c, context_frames // c * c)  # whole chunks, so the newest frames form one chunk
    spf = SAMPLE_RATE // pipe.fps
    unet, scheduler = pipe.decoder_for(decoder)
    resampler = None
    if sampling_rate != SAMPLE_RATE:
        import soxr

        resampler = soxr.ResampleStream(sampling_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    wave = np.zeros(0, dtype=np.float32)  # 16 kHz samples from frame `wave_start` on
    wave_start, done, total_in, ended = 0, 0, 0, False
    chunks = iter(chunks)
    while not ended:
        try:
            samples = to_samples(next(chunks))
            total_in += samples.shape[0]
            if max_duration is not None and total_in / sampling_rate > max_duration:
                raise AudioError(f"the audio is longer than the {max_duration:g} s accepted")
            if resampler is not None:
                samples = resampler.resample_chunk(samples)
        except StopIteration:
            ended = True
            samples = resampler.resample_chunk(np.zeros(0, np.float32), last=True) if resampler is not None else None
        if samples is not None and samples.size:
            wave = np.concatenate([wave, samples.astype(np.float32, copy=False)])
        heard = wave_start + wave.shape[0] // spf  # whole frames of audio so far
        if ended:
            heard = total_in * pipe.fps // sampling_rate
            if heard < 1:
                raise AudioError("the audio is shorter than one video frame" if total_in else "the audio stream was empty")
            wave = np.pad(wave, (0, max(0, (heard - wave_start) * spf - wave.shape[0])))
        while done + c <= heard or (ended and done < heard):
            end = min(done + c, heard)
            start = max(0, end - context)
            pose_t = pipe.prepare_pose(pose_mode, pose, end)
            out = pipe.predict_latents(wave[(start - wave_start) * spf : (end - wave_start) * spf], end - start,
                                       None if pose_t is None else pose_t[:, start:end], emotion_t, s2l)
            z, p = out["z_sem"][done - start :], out["pose"][done - start :]
            images = ddim_decode(unet, scheduler, z.to(x_T.device), x_T, num_inference_steps, z.shape[0],
                                 precision=pipe.precision)
            if refine and pipe.refiner is not None:
                images = pipe.refine_frames(images)
            yield images, z, p
            done = end
            keep_from = max(0, done + c - context)  # the audio the next window starts at
            if keep_from > wave_start:
                wave = wave[(keep_from - wave_start) * spf :]
                wave_start = keep_from
