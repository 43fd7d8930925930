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

from ...errors import InputError
from ..ddim import ddim_decode
from .incoming import FrameAudio, incoming_audio


def check_live(s2l) -> int:
    """The speaker's chunk length C; an InputError when its speech2latent does not stream."""
    c = getattr(s2l.config, "chunk_frames", 0)
    if not c:
        raise InputError("live=True needs a streaming speech2latent (`talker train s2l --chunk-frames C`, added to a "
                         "speaker with `talker export --live-s2l`); this speaker's needs whole 4-s windows: use live=False")
    return c


def live_frames(pipe, chunks: Iterable[Any], sampling_rate: int, num_inference_steps: int, pose_mode: str, pose: Any,
                emotion_t, x_T: torch.Tensor, context_frames: int, decoder: str | None, refine: bool,
                max_duration: float | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images (B, 3, H, W) in [-1, 1], z_sem (B, D), poses (B, 3)) for each chunk of frames, as
    soon as its audio is in."""
    s2l = pipe.streaming_speech_to_latent
    c = check_live(s2l)
    context = max(c, context_frames // c * c)  # whole chunks, so the newest frames form one chunk
    unet, scheduler = pipe.decoder_for(decoder)
    audio, done = FrameAudio(pipe.fps), 0
    for samples, n_frames in incoming_audio(chunks, sampling_rate, pipe.fps, max_duration):
        audio.extend(samples, n_frames)
        while done + c <= audio.heard or (audio.ended and done < audio.heard):
            end = min(done + c, audio.heard)
            start = max(0, end - context)
            pose_t = pipe.prepare_pose(pose_mode, pose, end)
            out = pipe.predict_latents(audio.frames(start, end), end - start,
                                       None if pose_t is None else pose_t[:, start:end], emotion_t, s2l)
            z, p = out["z_sem"][done - start :], out["pose"][done - start :]
            images = ddim_decode(unet, scheduler, z.to(x_T.device), x_T, num_inference_steps, z.shape[0],
                                 precision=pipe.precision)
            if refine and pipe.refiner is not None:
                images = pipe.refine_frames(images)
            yield images, z, p
            done = end
            audio.forget_before(done + c - context)  # the next window starts there
