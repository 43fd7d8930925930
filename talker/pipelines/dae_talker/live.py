"""Live generation: audio pushed in as it arrives, each frame out as soon as its audio is in.

A streaming speech2latent (``chunk_frames`` = C > 0) hears the audio of a frame's chunk of C
frames and before, never after. So as soon as the audio of frames [t, t + C) is in, they are
computed, each chunk once: its features (the front end on its audio after one frame of the past,
voice activity carried on by :class:`~talker.vad.VoiceActivityStream`), one step of the network's
:class:`~talker.models.speech2latent_stream.Speech2LatentStream` (attention and the normalisation
reach back ``memory_frames``, default ``talker.defaults.LIVE_CONTEXT_FRAMES``), then the C
latents decoded together from the video's one fixed noise image (by the light decoder, and on a
CPU refined by the live refiner, where the speaker has them). A frame therefore waits at
most C − 1 frames of audio (the look-ahead) plus the time to compute its chunk, and a chunk costs
the same however long the stream has run.

A :class:`LiveSession` is pushed to (a server's microphone handler, a WebRTC track);
``pipe.stream(..., live=True)`` drives one from an iterable. A display that shows one picture at a
time asks for ``newest_only``: each push then decodes only the newest finished frame (the
network still steps through every chunk, which costs little), so the picture never falls
behind the voice however slow the machine. On a CUDA GPU the decoder and the refiner replay CUDA
graphs recorded when the session starts (:mod:`..cuda_graphs`; ``pipe.live_cuda_graphs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...frontends import audio_features
from ...models.speech2latent_stream import Speech2LatentStream
from ...vad import VoiceActivityStream
from ..cuda_graphs import GraphedCall, GraphedDecoder
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


class LiveFeatures:
    """speech2latent's input for live frames, each frame's computed once: the front end on the
    frames' audio after ``margin`` frames of the past (log-mel reads 12.5 ms around each row, so
    one frame makes its rows what the whole stream would give; wav2vec2 hears the margin as its
    context), and P(speech) carried on across the stream."""

    def __init__(self, pipe, s2l, margin: int):
        self.pipe, self.s2l = pipe, s2l
        self.margin = 1 if s2l.config.audio_frontend == "mel" else margin
        self.vad = VoiceActivityStream() if s2l.config.voice_activity else None

    def __call__(self, audio: FrameAudio, first: int, end: int) -> torch.Tensor:
        """(1, (end − first) × rows per frame, F [+ 1]) features of frames [first, end), which
        follow the frames asked for before."""
        start = max(0, first - self.margin)
        rows = self.s2l.frames_per_feature
        feats = audio_features(audio.frames(start, end), end - start, self.s2l.config, self.pipe.audio_encoder,
                               self.pipe.feature_extractor)[(first - start) * rows :]
        if self.vad is not None:
            self.vad.extend(audio.frames(first, end))
            p = self.vad.probability(first * rows, end * rows, rows).to(feats.device, feats.dtype)
            feats = torch.cat([feats, p[:, None]], dim=1)
        return feats[None].to(self.s2l.device)


class LiveSession:
    """One live generation: :meth:`push` audio chunks (any size, at ``sampling_rate``) as they
    arrive and get back the frames they complete, :meth:`end` when the audio stops. Frames come as
    ``(index, frame)``: the frame's place in the video (its time is index / fps) and (H, W, 3) uint8.
    Made by ``pipe.live_session(...)``, which checks the arguments."""

    def __init__(self, pipe, sampling_rate: int, settings: Settings, memory_frames: int, max_duration: float | None,
                 newest_only: bool = False):
        self.pipe = pipe
        self.s2l = pipe.streaming_speech_to_latent
        self.chunk = check_live(self.s2l)
        self.settings = self._graphed(settings, newest_only) if pipe.live_cuda_graphs and settings.x_T.is_cuda else settings
        self.memory = max(self.chunk, memory_frames)
        self.stream = Speech2LatentStream(self.s2l, self.memory)
        self.features = LiveFeatures(pipe, self.s2l, self.memory)
        self.newest_only = newest_only
        self.intake = AudioIntake(sampling_rate, pipe.fps, max_duration)
        self.audio = FrameAudio(pipe.fps)
        self.done = 0  # frames computed (with newest_only, some of them skipped)
        self.skipped = 0  # frames not shown (newest_only)
        self.ended = False

    def _graphed(self, settings: Settings, newest_only: bool) -> Settings:
        """``settings`` with the decoder and refiner replaying CUDA graphs, recorded now for the
        batches the session decodes (a chunk, or the newest frame), so that the first chunk does
        not wait for the recording."""
        settings = dataclasses.replace(settings, unet=GraphedDecoder(settings.unet),
                                       refiner=GraphedCall(settings.refiner or self.pipe.refiner) if settings.refine else None)
        with torch.inference_mode():
            decode_latents(self.pipe, torch.zeros(1 if newest_only else self.chunk, self.s2l.config.latent_dim), settings)
        return settings

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
        c, audio, out, newest = self.chunk, self.audio, [], None
        with torch.inference_mode():
            while self.done + c <= audio.heard or (audio.ended and self.done < audio.heard):
                first, end = self.done, min(self.done + c, audio.heard)
                z_sem = self._latents(first, end)
                self.done = end
                audio.forget_before(self.done - self.features.margin)  # what the next chunk's features read
                if self.newest_only:
                    self.skipped += 0 if newest is None else newest[0]
                    newest = (end - first, end, z_sem)
                else:
                    out += self._frames(end, z_sem)
            if newest is not None:
                self.skipped += newest[0] - 1  # all but the newest frame
                out += self._frames(newest[1], newest[2][-1:])
        return out

    def _latents(self, first: int, end: int) -> torch.Tensor:
        """One step of the stream: the (end − first, D) z_sem of frames [first, end)."""
        pipe, settings = self.pipe, self.settings
        pose_t = pipe.prepare_pose(settings.pose_mode, settings.pose, end)
        # no voice gate: on live input it cost the recorded prompts 0.03 of mouth correlation
        # (bench/real_speech.py --live), more than it gains on babble there
        out = self.stream.step(self.features(self.audio, first, end), None if pose_t is None else pose_t[:, first:end],
                               pipe.latent_emotion(settings.emotion), shape_mouth=True)
        return out.z_sem[0]

    def _frames(self, end: int, z_sem: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """The frames ending at ``end`` whose latents are ``z_sem``, decoded → [(index, frame)]."""
        images = decode_latents(self.pipe, z_sem, self.settings)
        return list(zip(range(end - images.shape[0], end), postprocess_frames(images, "np"), strict=True))
