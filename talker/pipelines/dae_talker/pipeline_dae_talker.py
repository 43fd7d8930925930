"""DAE-Talker: speech → semantic latents → DDIM-decoded talking-face frames.

``__call__`` reads as the method: check inputs → load audio → audio features → speech2latent
(latents and head poses, on overlapping windows) → one fixed noise image x_T → batched DDIM
decoding (→ refiner) → frames. The windowed loop is :mod:`.generation`, streaming and live input
:mod:`.streaming`, video files :mod:`.video_output`, the choice of decoder :mod:`.decoders`, emotion
by an expression warp :mod:`.expression`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from ...audio import DEFAULT_MAX_DURATION, load_audio
from ...defaults import SAMPLE_RATE
from ...frontends import speech_features
from ...models import DAEDecoderUNet, ExpressionWarp, Refiner, SemanticEncoder, Speech2Latent, VoiceGate
from ..ddim import check_precision, decoder_autocast
from ..images import check_output_type, postprocess_frames
from ..loading import SpeakerCheckpointMixin
from .decoders import DecoderChoiceMixin
from .expression import ExpressionMixin
from .generation import DAETalkerOutput, generate_frames
from .inputs import (POSE_MODES, Settings, check_flag, check_positive_int, emotion_vector, frame_options, noise_image,
                     pose_sequence)
from .streaming import StreamingMixin
from .video_output import VideoOutputMixin
from .windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, check_windows

__all__ = ["DAETalkerPipeline", "DAETalkerOutput", "POSE_MODES"]


class DAETalkerPipeline(SpeakerCheckpointMixin, DecoderChoiceMixin, ExpressionMixin, StreamingMixin, VideoOutputMixin,
                        DiffusionPipeline):
    """Speech-driven talking face of one speaker (Du et al., "DAE-Talker", ACM MM 2023).

    Components: ``unet`` (conditional DDIM decoder), ``scheduler`` (DDIM), ``speech_to_latent``
    (Conformer with pose adaptor), optional ``encoder`` (semantic encoder, for encoding and
    inverting real frames), optional ``distilled_unet`` (a decoder distilled from ``unet`` that
    renders its 100-step frames in 1 to 8 steps, :mod:`talker.training.distill`), optional
    ``light_unet`` (a narrower decoder distilled from ``distilled_unet``: live input's), optional
    ``expression`` (moves the decoder's frames by each emotion's flow and colour residual, in
    proportion to its intensity: :class:`~talker.models.ExpressionWarp`), optional
    ``refiner`` (renders the decoder's frames at 4× or 8× their size, trained on the speaker's
    own frames; used unless ``refine=False``), optional ``live_refiner`` (a narrower refiner to
    the same size, for live input's every frame on a CPU), optional ``live_speech_to_latent`` (a streaming
    speech2latent, ``chunk_frames`` > 0, for ``stream(..., live=True)``), optional ``voice_gate``
    (P(a foreground voice speaks) per frame: the mouth shuts on babble; not in live input) and, for the wav2vec2
    front end, ``audio_encoder`` and ``feature_extractor``. ``pipe.speaker`` holds the
    checkpoint's ``speaker.json``.
    """

    model_cpu_offload_seq = "audio_encoder->voice_gate->speech_to_latent->live_speech_to_latent->unet->distilled_unet->light_unet->expression->refiner->live_refiner"
    _optional_components = ["encoder", "audio_encoder", "feature_extractor", "distilled_unet", "refiner",
                            "live_speech_to_latent", "voice_gate", "light_unet", "live_refiner", "expression"]
    _required_components = ("unet", "scheduler", "speech_to_latent")
    #: the decoder's compute type: "auto" (a float32 decoder runs under bfloat16 autocast on a CPU
    #: with native bfloat16, about 2× faster), "float32" or "bfloat16"; see :mod:`talker.pipelines.ddim`
    precision: str = "auto"
    #: live sessions on a CUDA GPU replay the decoder and the refiner from CUDA graphs
    #: (:mod:`talker.pipelines.cuda_graphs`); False runs them launch by launch
    live_cuda_graphs: bool = True

    def __init__(
        self,
        unet: DAEDecoderUNet,
        scheduler: DDIMScheduler,
        speech_to_latent: Speech2Latent,
        encoder: SemanticEncoder | None = None,
        audio_encoder: Any = None,
        feature_extractor: Any = None,
        distilled_unet: DAEDecoderUNet | None = None,
        refiner: Refiner | None = None,
        live_speech_to_latent: Speech2Latent | None = None,
        voice_gate: VoiceGate | None = None,
        light_unet: DAEDecoderUNet | None = None,
        live_refiner: Refiner | None = None,
        expression: ExpressionWarp | None = None,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            speech_to_latent=speech_to_latent,
            encoder=encoder,
            audio_encoder=audio_encoder,
            feature_extractor=feature_extractor,
            distilled_unet=distilled_unet,
            refiner=refiner,
            live_speech_to_latent=live_speech_to_latent,
            voice_gate=voice_gate,
            light_unet=light_unet,
            live_refiner=live_refiner,
            expression=expression,
        )
        self.speaker: dict = {}

    @property
    def fps(self) -> int:
        return self.speech_to_latent.config.fps

    @property
    def resolution(self) -> int:
        """The side of the decoder's frames."""
        return self.unet.config.sample_size

    def output_resolution(self, refine: bool = True) -> int:
        """The side of the frames the pipeline returns: the refiner's where the speaker has one
        and ``refine``, else the decoder's."""
        return self.refiner.out_resolution if refine and self.refiner is not None else self.resolution

    @property
    def streaming_speech_to_latent(self) -> Speech2Latent:
        """The speech2latent of live generation: ``live_speech_to_latent`` where the speaker has
        one, else ``speech_to_latent`` (which streams only if trained with ``chunk_frames``)."""
        return self.live_speech_to_latent if self.live_speech_to_latent is not None else self.speech_to_latent

    @property
    def emotion_names(self) -> tuple[str, ...]:
        return tuple(self.speech_to_latent.config.emotion_names or ())

    # --- the steps of the method -----------------------------------------------------------------

    def settings(self, caller: str = "settings", **options) -> Settings:
        """Check what a generation was asked for (before any work) and prepare what stays the same
        for every frame: steps, pose, emotion (1, E), the one fixed noise image x_T. ``options``:
        ``__call__``'s per-frame arguments by name (:data:`.inputs.FRAME_OPTIONS`), its defaults
        for the rest."""
        o = frame_options(options, self.__call__, caller)
        steps = self.steps_for(o["decoder"], o["num_inference_steps"])
        unet, scheduler = self.decoder_for(o["decoder"])
        check_flag("refine", o["refine"])
        check_precision(self.precision)
        self.prepare_pose(o["pose_mode"], o["pose"], 1)  # a bad pose fails here, not at the first frame
        if o["frame_batch_size"] is not None:
            check_positive_int("frame_batch_size", o["frame_batch_size"])
        return Settings(steps, o["pose_mode"], o["pose"], self.prepare_emotion(o["emotion"]),
                        self.prepare_fixed_noise(o["generator"], o["fixed_noise"]), unet, scheduler,
                        o["refine"] and self.refiner is not None, o["frame_batch_size"] or self.default_frame_batch_size())

    def prepare_pose(self, pose_mode: str, pose: Any, n_frames: int) -> torch.Tensor | None:
        """The pose fed to the pose projector: None (predicted) or (1, N, 3) degrees (:func:`.inputs.pose_sequence`)."""
        return pose_sequence(pose_mode, pose, n_frames, self.speech_to_latent, self.speaker)

    def prepare_emotion(self, emotion: Any) -> torch.Tensor | None:
        """A dict of named intensities or a vector in [0, 1] → (1, E), or None for neutral."""
        return emotion_vector(emotion, self.emotion_names, self.speech_to_latent)

    def prepare_fixed_noise(self, generator, fixed_noise=None) -> torch.Tensor:
        """One noise image x_T (1, C, H, W) shared by every frame of the video."""
        shape = (1, self.unet.config.in_channels, self.resolution, self.resolution)
        return noise_image(shape, self._execution_device, self.unet.dtype, generator, fixed_noise)

    def default_frame_batch_size(self) -> int:
        """Frames denoised together: 16 on a CPU; on a GPU as many as a quarter of its free memory
        holds (measured activations of one frame ≈ 40 × C × H × W × 4 bytes for this UNet), 8 to 256."""
        device = self._execution_device
        if device.type != "cuda":
            return 16
        free, _ = torch.cuda.mem_get_info(device)
        per_frame = 40 * self.unet.config.base_channels * self.resolution**2 * 4
        return int(min(256, max(8, free // 4 // per_frame)))

    def encode_audio(self, wave: np.ndarray, n_frames: int, s2l: Speech2Latent | None = None) -> torch.Tensor:
        """16 kHz samples → (1, n_frames × feature_rate / fps, feature_dim [+ 1]) features for
        ``s2l`` (default ``speech_to_latent``; with P(speech) last where it takes voice activity)."""
        s2l = s2l if s2l is not None else self.speech_to_latent
        return speech_features(wave, n_frames, s2l.config, self.audio_encoder, self.feature_extractor)[None].to(s2l.device)

    def predict_latents(self, wave: np.ndarray, n_frames: int, pose_t, emotion_t,
                        s2l: Speech2Latent | None = None, gate: bool = True,
                        gate_context: tuple[np.ndarray, int] | None = None) -> dict[str, torch.Tensor]:
        """speech2latent (``s2l``, default ``speech_to_latent``) on one window: ``n_frames`` frames
        of 16 kHz ``wave`` (pose_t: that window's (1, n, 3) pose or None) → {"z_sem": (n, D),
        "pose": (n, 3)}; where the speaker has voice activity and a mouth read-out, mouths shut
        where nobody speaks (and, with a voice gate and ``gate``, where only babble is heard).
        ``gate_context``: (the samples of whole frames around the window, the frame where the
        window starts in them): the voice gate hears those instead of the window alone."""
        s2l = s2l if s2l is not None else self.speech_to_latent
        spf = SAMPLE_RATE // self.fps
        wave = wave[: n_frames * spf]
        features = self.encode_audio(wave, n_frames, s2l)
        speaking = None
        if gate and self.voice_gate is not None:
            if gate_context is None:
                p = self.voice_gate.probability(wave, n_frames)
            else:
                heard, offset = gate_context
                p = self.voice_gate.probability(heard, len(heard) // spf)[offset : offset + n_frames]
            speaking = p[None].to(s2l.device)
        out = s2l(features, pose=pose_t, emotion=self.latent_emotion(emotion_t), shape_mouth=True, speaking=speaking)
        return {"z_sem": out.z_sem[0], "pose": out.pose[0]}

    @torch.no_grad()
    def refine_frames(self, images: torch.Tensor, refiner=None) -> torch.Tensor:
        """The refiner on (B, 3, r, r) decoder frames in [-1, 1] → (B, 3, R, R), under the
        decoder's precision (bfloat16 autocast on a CPU that has it); no gradients. ``refiner``:
        what runs in place of the speaker's refiner (its live refiner, a live session's CUDA graph)."""
        device = self.refiner.device
        with decoder_autocast(device, self.refiner.dtype, self.precision):
            return (refiner or self.refiner)(images.to(device, self.refiner.dtype)).float()

    # --- the method ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        audio: Any,
        sampling_rate: int | None = None,
        num_inference_steps: int | None = None,
        pose_mode: str = "predicted",
        pose: Any = None,
        emotion: Mapping[str, float] | Sequence[float] | np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        frame_batch_size: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        fixed_noise: torch.Tensor | None = None,
        max_duration: float | None = DEFAULT_MAX_DURATION,
        window_frames: int = DEFAULT_WINDOW,
        overlap_frames: int = DEFAULT_OVERLAP,
        decoder: str | None = None,
        refine: bool = True,
    ) -> DAETalkerOutput | tuple:
        """Generate the talking-face frames for ``audio``.

        Args:
            audio: a path (wav/flac/ogg/mp3/m4a/webm), or samples as a numpy array / tensor
                ((T,), (T, C) or (C, T)) with ``sampling_rate``.
            sampling_rate: Hz of an array input; any rate is resampled to 16 kHz.
            num_inference_steps: denoising steps per frame (DAE-Talker: 100 DDIM steps); default
                :meth:`default_steps` of the decoder (distilled: 1, DDIM: 10).
            pose_mode: "predicted" (from speech), "static" (``pose`` = 3 angles, default the
                speaker's mean pose) or "reference" (``pose`` = (M, 3) degrees, looped
                back and forth or trimmed to N frames; default the speaker's reference pose).
            pose: see ``pose_mode``.
            emotion: {name: intensity in [0, 1]} or a vector in ``emotion_names`` order; None
                or zeros = neutral.
            generator: seeds the fixed noise image x_T.
            frame_batch_size: frames denoised together (default: from the device and its memory).
            output_type: "np", "pil" or "pt".
            fixed_noise: use this x_T (1, 3, H, W) instead of drawing one (e.g. an inverted frame).
            max_duration: longest accepted audio in seconds (None: no limit).
            window_frames / overlap_frames: speech2latent runs on windows of this many frames
                (default 4 s, the training windows) joined by cross-fades of ``overlap_frames``.
            decoder: "distilled" (the speaker's few-step decoder, the default where it has one),
                "ddim" (the paper's decoder, ``unet`` with ``scheduler``) or "light" (a narrower
                distilled decoder, where the speaker has one: live input's default).
            refine: where the speaker has a refiner, return its frames (e.g. 256² from a 64²
                decoder; :meth:`output_resolution`); False: the decoder's own frames.

        Returns:
            :class:`DAETalkerOutput` (or a tuple when ``return_dict=False``); N = round(duration × fps).
        """
        check_output_type(output_type)
        frames, poses, latents, settings = [], [], [], None
        batches = self._generate(audio, sampling_rate, max_duration, window_frames, overlap_frames,
                                 num_inference_steps=num_inference_steps, pose_mode=pose_mode, pose=pose, emotion=emotion,
                                 generator=generator, frame_batch_size=frame_batch_size, fixed_noise=fixed_noise,
                                 decoder=decoder, refine=refine)
        for images, z, p, settings in batches:
            frames.append(images.cpu())
            latents.append(z)
            poses.append(p)
        frames = postprocess_frames(torch.cat(frames), output_type)
        poses, latents = torch.cat(poses).float().cpu(), torch.cat(latents).float().cpu()
        if output_type != "pt":
            poses, latents = poses.numpy(), latents.numpy()
        out = DAETalkerOutput(frames=frames, poses=poses, latents=latents, fps=self.fps, fixed_noise=settings.x_T.cpu())
        return out if return_dict else out.to_tuple()

    def _generate(self, audio, sampling_rate, max_duration, window_frames, overlap_frames, caller="__call__",
                  **options) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Settings]]:
        """``__call__``'s arguments → (images, z_sem, poses, settings) per decoded batch."""
        # 1. check the inputs and prepare what every frame shares, 3. the one fixed noise image x_T
        check_windows(window_frames, overlap_frames)
        settings = self.settings(caller, **options)
        # 2. audio → 16 kHz mono, a whole number of frames
        wave = load_audio(audio, sampling_rate, max_duration=max_duration, fps=self.fps)
        n_frames = wave.shape[0] * self.fps // SAMPLE_RATE
        # 4. speech2latent on overlapping windows, 5. batched DDIM decoding, as frames become final;
        # one tick per denoising step of a batch: full batches, the rest at the end
        total = -(-n_frames // settings.frame_batch_size) * settings.steps
        with torch.inference_mode(), self.progress_bar(total=total) as bar:
            for images, z, p in generate_frames(self, [wave], SAMPLE_RATE, settings, window_frames, overlap_frames,
                                                bar.update):
                yield images, z, p, settings
        self.maybe_free_model_hooks()
