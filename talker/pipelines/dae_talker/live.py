"""Live generation: audio pushed in as it arrives, each frame out as soon as its audio is in.

A streaming speech2latent (``chunk_frames`` = C > 0) hears the audio of a frame's chunk of C
frames and before, never after. So as soon as the audio of frames [t, t + C) is in, they are
computed: speech2latent on the last ``context_frames`` of audio (default
``talker.defaults.LIVE_CONTEXT_FRAMES``, about 2 s; the network's frames see their own chunk and
the past, so the newest C frames are what it computes for them with that much history), then
the C latents are decoded together from the video's one fixed noise image. A frame therefore
waits at most C − 1 frames of audio (the look-ahead) plus the time to compute its chunk.

A :class:`LiveSession` is pushed to (a server's microphone handler, a WebRTC track);
``pipe.stream(..., live=True)`` drives one from an iterable. A display that shows one picture at a
time asks for ``newest_only``: each push then computes only the newest finished frame, skipping
the frames in between, so the picture never falls behind the voice however slow the machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ..images import postprocess_frames
from .generation import decode_latents
from .incoming import AudioIntake, FrameAudio
from .inputs import Settings


def check_live(s2l) -> int:
    """The speaker's chunk length C; an InputError when its speech2latent does not stream."""
    c = getattr(s2l.config, "chunk_frames", 0)
    if not c:
        raise InputError("live=True needs a streaming speech2latent (`talker train s2l --chunk-frames C`, added to a "
                         "speaker with `talker export --live-s2l`); this speaker's needs whole 4-s windows: use live=False")
    return c


class LiveSession:
    """One live generation: :meth:`push` audio chunks (any size, at ``sampling_rate``) as they
    arrive and get back the frames they complete, :meth:`end` when the audio stops. Frames come as
    ``(index, frame)``: the frame's place in the video (its time is index / fps) and (H, W, 3) uint8.
    Made by ``pipe.live_session(...)``, which checks the arguments."""

    def __init__(self, pipe, sampling_rate: int, settings: Settings, context_frames: int, max_duration: float | None,
                 newest_only: bool = False):
        self.pipe, self.settings = pipe, settings
        self.s2l = pipe.streaming_speech_to_latent
        self.chunk = check_live(self.s2l)
        self.context = max(self.chunk, context_frames // self.chunk * self.chunk)  # whole chunks
        self.newest_only = newest_only
        self.intake = AudioIntake(sampling_rate, pipe.fps, max_duration)
        self.audio = FrameAudio(pipe.fps)
        self.done = 0  # frames computed or skipped
        self.skipped = 0  # frames not shown (newest_only)
        self.ended = False

    def push(self, chunk: Any) -> list[tuple[int, np.ndarray]]:
        """Add the next audio chunk; the frames it completes (with ``newest_only``, at most one)."""
        if self.ended:
            raise InputError("this live session has ended; start a new one")
        self.audio.extend(self.intake.push(chunk), None)
        return self._run()

    def end(self) -> list[tuple[int, np.ndarray]]:
        """The audio has stopped: the frames still owed (the last partial chunk)."""
        if self.ended:
            return []
        self.ended = True
        self.audio.extend(*self.intake.end())
        return self._run()

    def _run(self) -> list[tuple[int, np.ndarray]]:
        c, audio, out = self.chunk, self.audio, []
        with torch.inference_mode():
            while self.done + c <= audio.heard or (audio.ended and self.done < audio.heard):
                end = min(self.done + c, audio.heard)
                if self.newest_only:  # jump to the newest chunk whose audio is all in
                    end = audio.heard if audio.ended else audio.heard // c * c
                    newest_start = max(self.done, (end - 1) // c * c)
                    self.skipped += end - self.done - 1  # all but the newest frame
                    self.done = newest_start
                images = self._chunk(self.done, end, 1 if self.newest_only else end - self.done)
                out += list(zip(range(end - images.shape[0], end), postprocess_frames(images, "np"), strict=True))
                self.done = end
                audio.forget_before(self.done + c - self.context)  # the next window starts there
        return out

    def _chunk(self, first: int, end: int, n_images: int) -> torch.Tensor:
        """speech2latent on the context of the chunk ending at ``end``; the last ``n_images`` of
        frames [first, end) decoded → (n_images, 3, H, W) in [-1, 1]."""
        pipe, c, settings = self.pipe, self.chunk, self.settings
        start = max(0, (end - 1) // c * c + c - self.context)  # the context of the chunk's whole C frames
        pose_t = pipe.prepare_pose(settings.pose_mode, settings.pose, end)
        # no voice gate: on the live context (2 s) it cost the recorded prompts 0.03 of mouth
        # correlation (bench/real_speech.py --live), more than it gains on babble there
        out = pipe.predict_latents(self.audio.frames(start, end), end - start,
                                   None if pose_t is None else pose_t[:, start:end], settings.emotion, self.s2l,
                                   gate=False)
        return decode_latents(pipe, out["z_sem"][end - start - n_images :], settings)
