"""Video files of :class:`DAETalkerPipeline`: frames written to mp4 as they are decoded, each
carrying the speaker's invisible watermark, in a file tagged as synthetic."""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch

from ...audio import load_audio
from ...defaults import SAMPLE_RATE
from ...errors import InputError
from ...video import VideoWriter, check_output_path, mark_frames
from ...watermark import MIN_SIDE, Payload, model_id
from ..images import postprocess_frames
from .generation import DAETalkerOutput


class VideoOutputMixin:
    """The watermark payload, ``video_writer``, ``write_video``, ``generate_video`` and
    ``mark_frames``; mixed into :class:`DAETalkerPipeline`."""

    @property
    def watermark_payload(self):
        """The watermark this speaker puts in its videos: its model id (weights' SHA-256, 32 bits)
        and the synthetic flag (see :mod:`talker.watermark`)."""
        if getattr(self, "_watermark_payload", None) is None:
            items = [(f"unet.{k}", v) for k, v in self.unet.state_dict().items()]
            items += [(f"speech_to_latent.{k}", v) for k, v in self.speech_to_latent.state_dict().items()]
            if self.refiner is not None:
                items += [(f"refiner.{k}", v) for k, v in self.refiner.state_dict().items()]
            self._watermark_payload = Payload(model_id(items))
        return self._watermark_payload

    def video_writer(self, path, audio: Any = None, sampling_rate: int | None = None, crf: int = 18,
                     watermark: bool = True, output_size: int | None = None):
        """A :class:`talker.video.VideoWriter` for this speaker's frames: the invisible watermark in
        every frame (unless ``watermark=False``), frames upscaled to ``output_size`` (default: the
        refiner's size where the speaker has one, and at least the 256 px the watermark needs),
        and container tags saying the video is synthetic."""
        size = self.written_size(output_size, watermark)
        payload = self.watermark_payload
        name = self.speaker.get("name", "unnamed speaker")
        note = (f"Synthetic video made by talker (speech-driven talking face, DAE-Talker method) with speaker "
                f"'{name}', model id {payload.model_id_hex}; invisible watermark: "
                f"{'yes (talker detect)' if watermark else 'no'}")
        metadata = {"comment": note, "description": note, "title": f"talker synthetic video: {name}"}
        return VideoWriter(path, fps=self.fps, audio=audio, sampling_rate=sampling_rate, crf=crf, metadata=metadata,
                           output_size=size, watermark=payload if watermark else None)

    def mark_frames(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) or (H, W, 3) uint8 frames as this speaker's videos carry them (the size
        :meth:`written_size` gives, the invisible watermark in each): for frames shown outside a
        video file, e.g. a live preview."""
        frames = np.asarray(frames)
        marked = mark_frames(frames[None] if frames.ndim == 3 else frames, self.written_size(), self.watermark_payload)
        return marked[0] if frames.ndim == 3 else marked

    def written_size(self, output_size: int | None = None, watermark: bool = True) -> int | None:
        """The frame side :meth:`video_writer` writes: ``output_size``, or by default the speaker's
        own (the refiner's, where it has one) and at least the 256 px the watermark needs (None:
        unmarked frames as they come). Raises :class:`InputError` for a size it cannot write."""
        if output_size is None:
            return max(MIN_SIDE, self.output_resolution()) if watermark else None
        if isinstance(output_size, bool) or not isinstance(output_size, int) or not 16 <= output_size <= 4096:
            raise InputError(f"output_size must be a frame side of 16–4096 px; got {output_size!r}")
        if watermark and output_size < MIN_SIDE:
            raise InputError(f"the watermark needs output_size of at least {MIN_SIDE} px; got {output_size} "
                             "(or pass watermark=False)")
        return output_size

    def write_video(self, path, frames, audio: Any = None, sampling_rate: int | None = None, crf: int = 18,
                    watermark: bool = True, output_size: int | None = None):
        """Write this pipeline's frames (e.g. ``pipe(...).frames``) as a watermarked, tagged mp4."""
        frames = np.asarray(frames)
        if audio is not None and not isinstance(audio, (str, os.PathLike)) and sampling_rate is None:
            sampling_rate = SAMPLE_RATE
        with self.video_writer(path, audio, sampling_rate, crf, watermark, output_size) as writer:
            writer.write(frames)
        return path

    def generate_video(self, audio: Any, path, sampling_rate: int | None = None, crf: int = 18,
                       watermark: bool = True, output_size: int | None = None, **kwargs) -> DAETalkerOutput:
        """Generate and write an mp4 (H.264 + AAC) with the input audio as its sound track.

        Frames go to the file as they are decoded, so memory does not grow with the audio's
        length; a failure leaves no partial file. Every frame carries the invisible watermark and
        the file says it is synthetic (``watermark=False`` leaves the frames unmarked; the tags
        stay); ``output_size`` is the frame side written (default: 256 px or the speaker's own
        (the refiner's, where it has one), whichever is larger). ``kwargs`` are those of
        ``__call__`` (not ``output_type``).
        Returns its output without the frames (``frames`` is the frame count)."""
        if "output_type" in kwargs:
            raise InputError("generate_video writes the frames to the file; output_type does not apply")
        check_output_path(path)  # a path it cannot write fails before any work,
        self.written_size(output_size, watermark)  # as does a size it cannot write
        rate = None  # a file: its own sound track, as it is
        if not isinstance(audio, (str, os.PathLike)):  # samples: decoded once, for the track and the frames
            audio, sampling_rate = np.asarray(load_audio(audio, sampling_rate, max_duration=None)), SAMPLE_RATE
            rate = SAMPLE_RATE
        poses, latents, n = [], [], 0
        try:  # __call__'s arguments with its defaults
            call = inspect.signature(self.__call__).bind(audio, sampling_rate, **kwargs)
        except TypeError as e:  # an argument __call__ does not take
            raise TypeError(f"generate_video() {e}") from None
        call.apply_defaults()
        gen = self._generate(caller="generate_video",
                             **{k: v for k, v in call.arguments.items() if k not in ("output_type", "return_dict")})
        first = next(gen)  # input errors surface before a file is opened
        with self.video_writer(path, audio, rate, crf, watermark, output_size) as writer:
            for images, z, p, settings in _chain_first(first, gen):
                writer.write(postprocess_frames(images, "np"))
                poses.append(p.float().cpu())
                latents.append(z.float().cpu())
                n += images.shape[0]
        return DAETalkerOutput(frames=n, poses=torch.cat(poses).numpy(), latents=torch.cat(latents).numpy(),
                               fps=self.fps, fixed_noise=settings.x_T.cpu())


def _chain_first(first, rest):
    yield first
    yield from rest
