"""Streaming generation for :class:`DAETalkerPipeline`: audio arriving in chunks, frames out as
soon as they are final (``stream``), or pushed live, each frame as soon as its audio is in
(``live_session``, :mod:`.live`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ...audio import check_sampling_rate
from ...defaults import LIVE_CONTEXT_FRAMES, SAMPLE_RATE
from ..images import postprocess_frames
from .generation import generate_frames
from .inputs import check_flag, check_positive_int, frame_options
from .live import LiveSession, check_live
from .windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, check_windows


class StreamingMixin:
    """``stream`` and ``live_session``; mixed into :class:`DAETalkerPipeline`."""

    @torch.no_grad()
    def stream(self, audio_chunks: Iterable[np.ndarray | torch.Tensor], sampling_rate: int = SAMPLE_RATE, *,
               window_frames: int | None = None, overlap_frames: int = DEFAULT_OVERLAP, first_batch: int = 2,
               max_duration: float | None = None, live: bool = False, **options) -> Iterator[np.ndarray]:
        """Streaming generation: audio chunks in, (H, W, 3) uint8 frames out as soon as they are final.

        A frame is emitted once the audio ``overlap_frames`` beyond it has arrived (the look-ahead)
        and its batch is decoded; the first batch is only ``first_batch`` frames so the first
        frame comes early. The frames equal ``__call__``'s on the same audio and noise.

        Args:
            audio_chunks: an iterable of mono (T,) (or (T, C)) sample arrays at ``sampling_rate``,
                e.g. microphone blocks; any chunk size.
            window_frames / overlap_frames: as in ``__call__`` (default 4 s); the look-ahead is
                ``overlap_frames`` and live latency at least ``window_frames`` of audio for the first frame.
            live: for a speaker with a streaming speech2latent (``chunk_frames`` C > 0): each
                frame comes out as soon as the audio of its chunk of C frames is in, decoded C at
                a time (:mod:`.live`); ``window_frames`` is then how far back its attention and
                feature normalisation reach (default ``LIVE_CONTEXT_FRAMES``, about 2 s).
                Its frames equal ``__call__``'s only where that covers the whole audio.
            options: ``__call__``'s per-frame arguments by name (``num_inference_steps``,
                ``pose_mode``, ``pose``, ``emotion``, ``generator``, ``frame_batch_size``,
                ``fixed_noise``, ``decoder``, ``refine``), with its defaults.
        """
        if check_flag("live", live):
            context = LIVE_CONTEXT_FRAMES if window_frames is None else window_frames
            session = self.live_session(sampling_rate, window_frames=context,
                                        max_duration=max_duration, caller="stream", **options)
            for chunk in audio_chunks:
                for _, frame in session.push(chunk):
                    yield frame
            for _, frame in session.end():
                yield frame
            return
        window_frames = DEFAULT_WINDOW if window_frames is None else window_frames
        check_windows(window_frames, overlap_frames)
        check_positive_int("first_batch", first_batch)
        rate = check_sampling_rate(sampling_rate)
        settings = self.settings("stream", **options)
        with torch.inference_mode():
            for images, _, _ in generate_frames(self, audio_chunks, rate, settings, window_frames, overlap_frames,
                                                first_batch=first_batch, max_duration=max_duration):
                yield from postprocess_frames(images, "np")

    def live_session(self, sampling_rate: int = SAMPLE_RATE, *, window_frames: int = LIVE_CONTEXT_FRAMES,
                     max_duration: float | None = None, newest_only: bool = False, caller: str = "live_session",
                     **options) -> LiveSession:
        """A live generation to push audio into as it arrives (a microphone handler, a WebRTC
        track): ``session.push(chunk)`` returns the ``(index, frame)`` pairs the chunk completes,
        ``session.end()`` the rest (see :mod:`.live`). Needs a streaming speech2latent.

        Args:
            newest_only: for a display that shows one picture at a time: each push computes only
                the newest finished frame and skips those in between (``session.skipped`` counts
                them), so the picture keeps up with the voice on any machine.
            window_frames: how many frames back speech2latent's attention and feature
                normalisation reach (default about 2 s); each chunk costs the same however long
                the session runs.
            decoder: as in ``stream``, but None is :attr:`live_decoder` (the light decoder
                where the speaker has one). A session that renders every frame on a CPU refines
                them with the speaker's ``live_refiner`` where it has one (narrower, so that they
                keep up); on a GPU, and for ``newest_only`` (one frame a push), the refiner keeps
                up and renders them (``refine=False``: the decoder's own frames). Other arguments
                as in ``stream``.
            caller: the method named in errors.
        """
        frame_options(options, self.__call__, caller)  # an argument it does not take fails first, as in any call
        check_live(self.streaming_speech_to_latent)
        if options.get("decoder") is None:
            options["decoder"] = self.live_decoder
        check_windows(window_frames, 0)
        check_flag("newest_only", newest_only)
        rate = check_sampling_rate(sampling_rate)
        settings = self.settings(caller, **options)
        if settings.refine and self.live_refiner is not None and not newest_only and self.device.type == "cpu":
            settings = dataclasses.replace(settings, refiner=self.live_refiner)
        return LiveSession(self, rate, settings, window_frames, max_duration, newest_only)

