"""DAE-Talker: speech → semantic latents → DDIM-decoded talking-face frames.

``__call__`` reads as the method: check inputs → load audio → audio features → speech2latent
(latents and head poses) → one fixed noise image x_T → batched DDIM decoding → frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ...audio import DEFAULT_MAX_DURATION, SAMPLE_RATE, load_audio
from ...frontends import speech_features
from ...defaults import DECODERS, DEFAULT_DISTILLED_STEPS, DEFAULT_STEPS, MAX_DISTILLED_STEPS, MAX_STEPS
from ...errors import CheckpointError, InputError
from ...models import DAEDecoderUNet, Refiner, SemanticEncoder, Speech2Latent
from ...pose import check_pose_range
from ..ddim import check_precision, ddim_decode, decoder_autocast, distilled_scheduler
from ..diffusion_autoencoder.pipeline_diffusion_autoencoder import DiffusionAutoencoderPipeline, _check_steps
from ..images import check_output_type, postprocess_frames
from ..loading import SpeakerCheckpointMixin
from .incoming import FrameAudio, incoming_audio
from .live import LiveSession, check_live
from .windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, CrossFader, check_windows

POSE_MODES = ("predicted", "static", "reference")


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


class DAETalkerPipeline(SpeakerCheckpointMixin, DiffusionPipeline):
    """Speech-driven talking face of one speaker (Du et al., "DAE-Talker", ACM MM 2023).

    Components: ``unet`` (conditional DDIM decoder), ``scheduler`` (DDIM), ``speech_to_latent``
    (Conformer with pose adaptor), optional ``encoder`` (semantic encoder, for encoding and
    inverting real frames), optional ``distilled_unet`` (a decoder distilled from ``unet`` that
    renders its 100-step frames in 1 to 8 steps, :mod:`talker.training.distill`), optional
    ``refiner`` (renders the decoder's frames at 4× or 8× their size, trained on the speaker's
    own frames; used unless ``refine=False``), optional ``live_speech_to_latent`` (a streaming
    speech2latent, ``chunk_frames`` > 0, for ``stream(..., live=True)``) and, for the wav2vec2
    front end, ``audio_encoder`` and ``feature_extractor``. ``pipe.speaker`` holds the
    checkpoint's ``speaker.json``.
    """

    model_cpu_offload_seq = "audio_encoder->speech_to_latent->live_speech_to_latent->unet->distilled_unet->refiner"
    _optional_components = ["encoder", "audio_encoder", "feature_extractor", "distilled_unet", "refiner",
                            "live_speech_to_latent"]
    _required_components = ("unet", "scheduler", "speech_to_latent")
    #: the decoder's compute type: "auto" (a float32 decoder runs under bfloat16 autocast on a CPU
    #: with native bfloat16, about 2× faster), "float32" or "bfloat16"; see :mod:`talker.pipelines.ddim`
    precision: str = "auto"

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
        )
        self.speaker: dict = {}

    # --- properties ---------------------------------------------------------------------------

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

    @property
    def autoencoder(self) -> DiffusionAutoencoderPipeline:
        """The speaker's diffusion autoencoder with the DDIM decoder (shares this pipeline's modules)."""
        return self.autoencoder_for("ddim")

    def autoencoder_for(self, decoder: str | None = None) -> DiffusionAutoencoderPipeline:
        """The speaker's diffusion autoencoder decoding with ``decoder`` (see :meth:`decoder_for`)."""
        if self.encoder is None:
            raise CheckpointError("this checkpoint has no semantic encoder (encoder/)")
        unet, scheduler = self.decoder_for(decoder)
        pipe = DiffusionAutoencoderPipeline(unet=unet, encoder=self.encoder, scheduler=scheduler)
        pipe.precision = self.precision
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    @property
    def default_decoder(self) -> str:
        """"distilled" when the speaker has a distilled decoder, else "ddim"."""
        return "distilled" if self.distilled_unet is not None else "ddim"

    def default_steps(self, decoder: str | None = None) -> int:
        """Denoising steps used when none are given: 2 for the distilled decoder, 10 for DDIM."""
        return DEFAULT_DISTILLED_STEPS if (decoder or self.default_decoder) == "distilled" else DEFAULT_STEPS

    def decoder_for(self, decoder: str | None = None):
        """(unet, scheduler) that render frames: ``decoder`` "distilled" (``distilled_unet`` with its
        DDIM; :func:`talker.pipelines.ddim.distilled_scheduler`), "ddim" (``unet`` with
        ``scheduler``, the paper's decoder), or None for :attr:`default_decoder`."""
        decoder = decoder or self.default_decoder
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        if decoder == "ddim":
            return self.unet, self.scheduler
        if self.distilled_unet is None:
            raise InputError("this speaker has no distilled decoder (distilled_unet/); use decoder='ddim', "
                             "or make one with `talker train distill`")
        return self.distilled_unet, distilled_scheduler(self.scheduler.config)

    def max_steps(self, decoder: str | None = None) -> int:
        """The most denoising steps ``decoder`` takes: 8 for the distilled decoder (trained for
        1-8), 1000 for DDIM (its training schedule)."""
        return MAX_DISTILLED_STEPS if (decoder or self.default_decoder) == "distilled" else MAX_STEPS

    def steps_for(self, decoder: str | None, num_inference_steps: int | None) -> int:
        """``num_inference_steps``, or ``decoder``'s default when None; an unknown or missing
        decoder, or more steps than the decoder takes, fails here, before any work."""
        self.decoder_for(decoder)
        if num_inference_steps is None:
            return self.default_steps(decoder)
        _check_steps(num_inference_steps)
        if num_inference_steps > self.max_steps(decoder):
            raise InputError(f"the distilled decoder renders in 1–{MAX_DISTILLED_STEPS} steps (default "
                             f"{DEFAULT_DISTILLED_STEPS}); got {num_inference_steps}. More steps are for decoder='ddim'")
        return num_inference_steps

    # --- steps of __call__ --------------------------------------------------------------------

    def check_inputs(self, num_inference_steps, pose_mode, frame_batch_size, output_type, refine=True):
        _check_steps(num_inference_steps)
        if not isinstance(refine, bool):
            raise InputError(f"refine must be True or False; got {refine!r}")
        check_precision(self.precision)
        if pose_mode not in POSE_MODES:
            raise InputError(f"pose_mode must be one of {', '.join(POSE_MODES)}; got {pose_mode!r}")
        if frame_batch_size is not None and (
            not isinstance(frame_batch_size, int) or isinstance(frame_batch_size, bool) or frame_batch_size < 1
        ):
            raise InputError(f"frame_batch_size must be a positive integer; got {frame_batch_size!r}")
        check_output_type(output_type)

    def encode_audio(self, wave: np.ndarray, n_frames: int, s2l: Speech2Latent | None = None) -> torch.Tensor:
        """16 kHz samples → (1, n_frames × feature_rate / fps, feature_dim [+ 1]) features for
        ``s2l`` (default ``speech_to_latent``; with P(speech) last where it takes voice activity)."""
        s2l = s2l if s2l is not None else self.speech_to_latent
        feats = speech_features(wave, n_frames, s2l.config, self.audio_encoder, self.feature_extractor)
        return feats[None].to(s2l.device)

    def prepare_pose(self, pose_mode: str, pose: Any, n_frames: int) -> torch.Tensor | None:
        """The pose fed to the pose projector: None (predicted) or (1, N, 3) degrees."""
        s2l = self.speech_to_latent
        if pose_mode == "predicted":
            if pose is not None:
                raise InputError("pose is only used with pose_mode='static' or 'reference'")
            return None
        if pose_mode == "static":
            if pose is None:  # the speaker's mean pose
                value = s2l.pose_mean.detach().float().cpu()
            else:
                value = _as_pose_array(pose, "static pose")
                if value.shape not in ((3,), (1, 3)):
                    raise InputError(f"a static pose is 3 angles (yaw, pitch, roll in degrees); got shape {tuple(value.shape)}")
                value = value.reshape(3)
            seq = value[None].expand(n_frames, 3)
        else:
            if pose is None:
                pose = self.speaker.get("reference_pose")
                if pose is None:
                    raise InputError(
                        "pose_mode='reference' needs pose=(M, 3) yaw/pitch/roll degrees; this checkpoint has no reference pose"
                    )
            value = _as_pose_array(pose, "reference pose")
            if value.dim() != 2 or value.shape[1] != 3 or value.shape[0] < 1:
                raise InputError(f"a reference pose is (M, 3) yaw, pitch, roll in degrees; got shape {tuple(value.shape)}")
            seq = loop_or_trim(value, n_frames)
        return seq[None].to(s2l.device, s2l.dtype)

    def prepare_emotion(self, emotion: Any) -> torch.Tensor | None:
        """A dict of named intensities or a vector in [0, 1] → (1, E), or None for neutral."""
        if emotion is None:
            return None
        names = self.emotion_names
        if not names:
            raise InputError("this speaker has no emotion control; pass emotion=None")
        if isinstance(emotion, Mapping):
            unknown = [k for k in emotion if k not in names]
            if unknown:
                raise InputError(f"unknown emotion {', '.join(map(str, unknown))}; allowed: {', '.join(names)}")
            values = [emotion.get(name, 0.0) for name in names]
        elif isinstance(emotion, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(emotion, str):
            try:
                arr = emotion.detach().cpu().numpy() if isinstance(emotion, torch.Tensor) else emotion
                values = np.asarray(arr, dtype=np.float64).reshape(-1).tolist()
            except (TypeError, ValueError):
                raise InputError(f"an emotion vector must be {len(names)} numbers in [0, 1] ({', '.join(names)})") from None
            if len(values) != len(names):
                raise InputError(f"an emotion vector has {len(names)} intensities ({', '.join(names)}); got {len(values)}")
        else:
            raise InputError(f"emotion must be a dict {{name: intensity}} or a vector of {len(names)} intensities")
        for name, v in zip(names, values, strict=True):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise InputError(f"emotion intensity of {name!r} must be a number in [0, 1]; got {v!r}")
        s2l = self.speech_to_latent
        return torch.tensor([values], dtype=s2l.dtype, device=s2l.device)

    def prepare_fixed_noise(self, generator, fixed_noise=None) -> torch.Tensor:
        """One noise image x_T (1, C, H, W) shared by every frame of the video."""
        shape = (1, self.unet.config.in_channels, self.resolution, self.resolution)
        device, dtype = self._execution_device, self.unet.dtype
        if fixed_noise is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        fixed_noise = torch.as_tensor(fixed_noise)
        if fixed_noise.dim() == 3:
            fixed_noise = fixed_noise[None]
        if tuple(fixed_noise.shape) != shape:
            raise InputError(f"fixed_noise must have shape {shape}; got {tuple(fixed_noise.shape)}")
        return fixed_noise.to(device, dtype)

    # --- the method ---------------------------------------------------------------------------

    def default_frame_batch_size(self) -> int:
        """Frames denoised together: 16 on a CPU; on a GPU as many as a quarter of its free memory
        holds (measured activations of one frame ≈ 40 × C × H × W × 4 bytes for this UNet), 8 to 256."""
        device = self._execution_device
        if device.type != "cuda":
            return 16
        free, _ = torch.cuda.mem_get_info(device)
        per_frame = 40 * self.unet.config.base_channels * self.resolution**2 * 4
        return int(min(256, max(8, free // 4 // per_frame)))

    def predict_latents(self, wave: np.ndarray, n_frames: int, pose_t, emotion_t,
                        s2l: Speech2Latent | None = None) -> dict[str, torch.Tensor]:
        """speech2latent (``s2l``, default ``speech_to_latent``) on one window: ``n_frames`` frames
        of 16 kHz ``wave`` (pose_t: that window's (1, n, 3) pose or None) → {"z_sem": (n, D),
        "pose": (n, 3)}; where the speaker has voice activity and a mouth read-out, mouths shut
        where nobody speaks."""
        s2l = s2l if s2l is not None else self.speech_to_latent
        features = self.encode_audio(wave[: n_frames * (SAMPLE_RATE // self.fps)], n_frames, s2l)
        out = s2l(features, pose=pose_t, emotion=emotion_t, shape_mouth=True)
        return {"z_sem": out.z_sem[0], "pose": out.pose[0]}

    def refine_frames(self, images: torch.Tensor) -> torch.Tensor:
        """The refiner on (B, 3, r, r) decoder frames in [-1, 1] → (B, 3, R, R), under the
        decoder's precision (bfloat16 autocast on a CPU that has it)."""
        device = self.refiner.device
        with decoder_autocast(device, self.refiner.dtype, self.precision):
            return self.refiner(images.to(device, self.refiner.dtype)).float()

    def _frames(self, chunks: Iterable, sampling_rate: int, num_inference_steps: int, pose_mode: str, pose: Any,
                emotion_t, x_T, batch: int, window: int, overlap: int, bar=None, first_batch: int | None = None,
                max_duration: float | None = None, decoder: str | None = None, refine: bool = True,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The generation loop shared by ``__call__``, ``generate_video`` and ``stream``: audio
        chunks → (images (B, 3, H, W) in [-1, 1], z_sem (B, D), poses (B, 3)) batches, in order,
        holding only the frames not yet final plus one batch."""
        unet, scheduler = self.decoder_for(decoder)
        hop = window - overlap
        fader = CrossFader(overlap)
        audio = FrameAudio(self.fps)
        next_start = 0  # the next window's first frame
        ready_z, ready_p = [], []
        pose_cache: dict[int, torch.Tensor | None] = {}

        def pose_until(end):
            if end not in pose_cache:
                pose_cache.clear()
                pose_cache[end] = self.prepare_pose(pose_mode, pose, end)
            return pose_cache[end]

        def run_window(start, end, last):
            pose_t = pose_until(end)
            out = self.predict_latents(audio.frames(start, end), end - start,
                                       None if pose_t is None else pose_t[:, start:end], emotion_t)
            fader.add(start, out, first=start == 0, last=last)
            final = fader.pop(end if last else start + hop)
            ready_z.append(final["z_sem"])
            ready_p.append(final["pose"])

        def decode_ready(flush):
            nonlocal ready_z, ready_p, emitted
            z = torch.cat(ready_z) if ready_z else torch.zeros(0, self.unet.config.z_dim)
            p = torch.cat(ready_p) if ready_p else torch.zeros(0, 3)
            done = 0
            while True:
                size = batch if (first_batch is None or emitted) else min(batch, first_batch)
                if z.shape[0] - done < size and not (flush and z.shape[0] > done):
                    break
                zb = z[done : done + size].to(x_T.device)
                images = ddim_decode(unet, scheduler, zb, x_T, num_inference_steps, zb.shape[0],
                                     None if bar is None else bar.update, precision=self.precision)
                if refine and self.refiner is not None:
                    images = self.refine_frames(images)
                emitted += zb.shape[0]
                yield images, zb, p[done : done + size]
                done += zb.shape[0]
            ready_z, ready_p = ([z[done:]], [p[done:]]) if done < z.shape[0] else ([], [])

        emitted = 0  # frames decoded so far
        for samples, n_frames in incoming_audio(chunks, sampling_rate, self.fps, max_duration):
            audio.extend(samples, n_frames)
            heard, ended = audio.heard, audio.ended
            while next_start < heard and (next_start + window <= heard or ended):
                if next_start > 0 and ended and next_start + overlap >= heard:
                    break  # the previous window already reached the end
                end = min(next_start + window, heard)
                last = ended and end >= heard
                run_window(next_start, end, last)
                next_start += hop
                audio.forget_before(min(next_start, heard))  # the next window starts there
                if last:
                    break
            if ended:  # frames the last window ended on, if it was run before the end was known
                rest = fader.pop(heard)
                if rest and rest["z_sem"].shape[0]:
                    ready_z.append(rest["z_sem"])
                    ready_p.append(rest["pose"])
            yield from decode_ready(flush=ended)

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
                :meth:`default_steps` of the decoder (distilled: 2, DDIM: 10).
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
            decoder: "distilled" (the speaker's few-step decoder, the default where it has one) or
                "ddim" (the paper's decoder, ``unet`` with ``scheduler``).
            refine: where the speaker has a refiner, return its frames (e.g. 256² from a 64²
                decoder; :meth:`output_resolution`); False: the decoder's own frames.

        Returns:
            :class:`DAETalkerOutput` (or a tuple when ``return_dict=False``); N = round(duration × fps).
        """
        frames, poses, latents, x_T = [], [], [], None
        for images, z, p, x_T in self._generate(audio, sampling_rate, num_inference_steps, pose_mode, pose, emotion,
                                                generator, frame_batch_size, output_type, fixed_noise, max_duration,
                                                window_frames, overlap_frames, decoder, refine):
            frames.append(images.cpu())
            latents.append(z)
            poses.append(p)
        frames = postprocess_frames(torch.cat(frames), output_type)
        poses, latents = torch.cat(poses).float().cpu(), torch.cat(latents).float().cpu()
        if output_type != "pt":
            poses, latents = poses.numpy(), latents.numpy()
        out = DAETalkerOutput(frames=frames, poses=poses, latents=latents, fps=self.fps, fixed_noise=x_T.cpu())
        return out if return_dict else out.to_tuple()

    def _generate(self, audio, sampling_rate=None, num_inference_steps=None, pose_mode="predicted", pose=None,
                  emotion=None, generator=None, frame_batch_size=None, output_type="np", fixed_noise=None,
                  max_duration=DEFAULT_MAX_DURATION, window_frames=DEFAULT_WINDOW, overlap_frames=DEFAULT_OVERLAP,
                  decoder=None, refine=True):
        """check inputs → load audio → windowed speech2latent → fixed x_T → batched DDIM decoding;
        yields (images, z_sem, poses, x_T) per decoded batch."""
        # 1. check inputs
        num_inference_steps = self.steps_for(decoder, num_inference_steps)
        self.check_inputs(num_inference_steps, pose_mode, frame_batch_size, output_type, refine)
        check_windows(window_frames, overlap_frames)
        emotion_t = self.prepare_emotion(emotion)

        # 2. audio → 16 kHz mono, a whole number of frames
        wave = load_audio(audio, sampling_rate, max_duration=max_duration, fps=self.fps)
        n_frames = wave.shape[0] * self.fps // SAMPLE_RATE
        self.prepare_pose(pose_mode, pose, 1)  # bad pose arguments fail before any work

        # 3. one fixed noise image for the whole video
        x_T = self.prepare_fixed_noise(generator, fixed_noise)

        # 4. speech2latent on overlapping windows, 5. batched DDIM decoding, as frames become final
        batch = frame_batch_size or self.default_frame_batch_size()
        # one tick per denoising step of a batch: frames are decoded in full batches, the rest at the end
        with torch.inference_mode(), self.progress_bar(total=-(-n_frames // batch) * num_inference_steps) as bar:
            for images, z, p in self._frames([wave], SAMPLE_RATE, num_inference_steps, pose_mode, pose, emotion_t,
                                             x_T, batch, window_frames, overlap_frames, bar, decoder=decoder,
                                             refine=refine):
                yield images, z, p, x_T
        self.maybe_free_model_hooks()

    @torch.no_grad()
    def stream(
        self,
        audio_chunks: Iterable[np.ndarray | torch.Tensor],
        sampling_rate: int = SAMPLE_RATE,
        num_inference_steps: int | None = None,
        pose_mode: str = "predicted",
        pose: Any = None,
        emotion: Mapping[str, float] | Sequence[float] | np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        frame_batch_size: int | None = None,
        fixed_noise: torch.Tensor | None = None,
        window_frames: int = DEFAULT_WINDOW,
        overlap_frames: int = DEFAULT_OVERLAP,
        first_batch: int = 2,
        max_duration: float | None = None,
        decoder: str | None = None,
        refine: bool = True,
        live: bool = False,
    ) -> Iterator[np.ndarray]:
        """Streaming generation: audio chunks in, (H, W, 3) uint8 frames out as soon as they are final.

        A frame is emitted once the audio ``overlap_frames`` beyond it has arrived (the look-ahead)
        and its batch is decoded; the first batch is only ``first_batch`` frames so the first
        frame comes early. The frames equal ``__call__``'s on the same audio and noise.

        Args:
            audio_chunks: an iterable of mono (T,) (or (T, C)) sample arrays at ``sampling_rate``,
                e.g. microphone blocks; any chunk size.
            window_frames / overlap_frames: as in ``__call__``; the look-ahead is ``overlap_frames``
                and live latency at least ``window_frames`` of audio for the first frame.
            live: for a speaker with a streaming speech2latent (``chunk_frames`` C > 0): each
                frame comes out as soon as the audio of its chunk of C frames is in, decoded C at
                a time (:mod:`.live`); ``window_frames`` is then the audio context it hears.
                Its frames equal ``__call__``'s only where the context covers the whole audio.
            Other arguments as in ``__call__``.
        """
        if not isinstance(live, bool):
            raise InputError(f"live must be True or False; got {live!r}")
        if live:
            session = self.live_session(sampling_rate, num_inference_steps, pose_mode, pose, emotion, generator,
                                        fixed_noise, window_frames, max_duration, decoder, refine)
            for chunk in audio_chunks:
                for _, frame in session.push(chunk):
                    yield frame
            for _, frame in session.end():
                yield frame
            return
        check_windows(window_frames, overlap_frames)
        if isinstance(first_batch, bool) or not isinstance(first_batch, int) or first_batch < 1:
            raise InputError(f"first_batch must be a positive integer; got {first_batch!r}")
        num_inference_steps, rate, emotion_t, x_T = self._prepare_stream(
            sampling_rate, num_inference_steps, pose_mode, pose, emotion, generator, fixed_noise, decoder, refine,
            frame_batch_size)
        batch = frame_batch_size or self.default_frame_batch_size()
        with torch.inference_mode():
            for images, _, _ in self._frames(audio_chunks, rate, num_inference_steps, pose_mode, pose, emotion_t, x_T,
                                             batch, window_frames, overlap_frames, first_batch=first_batch,
                                             max_duration=max_duration, decoder=decoder, refine=refine):
                yield from postprocess_frames(images, "np")

    def live_session(
        self,
        sampling_rate: int = SAMPLE_RATE,
        num_inference_steps: int | None = None,
        pose_mode: str = "predicted",
        pose: Any = None,
        emotion: Mapping[str, float] | Sequence[float] | np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        fixed_noise: torch.Tensor | None = None,
        window_frames: int = DEFAULT_WINDOW,
        max_duration: float | None = None,
        decoder: str | None = None,
        refine: bool = True,
        newest_only: bool = False,
    ) -> LiveSession:
        """A live generation to push audio into as it arrives (a microphone handler, a WebRTC
        track): ``session.push(chunk)`` returns the ``(index, frame)`` pairs the chunk completes,
        ``session.end()`` the rest (see :mod:`.live`). Needs a streaming speech2latent.

        Args:
            newest_only: for a display that shows one picture at a time: each push computes only
                the newest finished frame and skips those in between (``session.skipped`` counts
                them), so the picture keeps up with the voice on any machine.
            window_frames: the audio context speech2latent hears. Other arguments as in ``stream``.
        """
        check_live(self.streaming_speech_to_latent)
        check_windows(window_frames, 0)
        if not isinstance(newest_only, bool):
            raise InputError(f"newest_only must be True or False; got {newest_only!r}")
        num_inference_steps, rate, emotion_t, x_T = self._prepare_stream(
            sampling_rate, num_inference_steps, pose_mode, pose, emotion, generator, fixed_noise, decoder, refine)
        return LiveSession(self, rate, num_inference_steps, pose_mode, pose, emotion_t, x_T, window_frames, decoder,
                           refine, max_duration, newest_only)

    def _prepare_stream(self, sampling_rate, num_inference_steps, pose_mode, pose, emotion, generator, fixed_noise,
                        decoder, refine, frame_batch_size=None):
        """The checks and inputs shared by ``stream`` and ``live_session``, before any audio comes:
        → (steps, sampling rate, emotion (1, E) or None, fixed noise x_T)."""
        from ...audio import _check_sampling_rate

        num_inference_steps = self.steps_for(decoder, num_inference_steps)
        self.check_inputs(num_inference_steps, pose_mode, frame_batch_size, "np", refine)
        rate = _check_sampling_rate(sampling_rate)
        emotion_t = self.prepare_emotion(emotion)
        self.prepare_pose(pose_mode, pose, 1)  # a bad pose fails here, not at the first frame
        return num_inference_steps, rate, emotion_t, self.prepare_fixed_noise(generator, fixed_noise)

    # --- provenance and video files -----------------------------------------------------------

    @property
    def watermark_payload(self):
        """The watermark this speaker puts in its videos: its model id (weights' SHA-256, 32 bits)
        and the synthetic flag (see :mod:`talker.watermark`)."""
        from ...watermark import Payload, model_id

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
        from ...video import VideoWriter

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
        from ...video import mark_frames

        frames = np.asarray(frames)
        marked = mark_frames(frames[None] if frames.ndim == 3 else frames, self.written_size(), self.watermark_payload)
        return marked[0] if frames.ndim == 3 else marked

    def written_size(self, output_size: int | None = None, watermark: bool = True) -> int | None:
        """The frame side :meth:`video_writer` writes: ``output_size``, or by default the speaker's
        own (the refiner's, where it has one) and at least the 256 px the watermark needs (None:
        unmarked frames as they come). Raises :class:`InputError` for a size it cannot write."""
        from ...watermark import MIN_SIDE

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
        from ...video import check_output_path

        check_output_path(path)  # a path it cannot write fails before any work,
        self.written_size(output_size, watermark)  # as does a size it cannot write
        track = audio if isinstance(audio, (str, os.PathLike)) else np.asarray(load_audio(audio, sampling_rate, max_duration=None))
        rate = None if isinstance(track, (str, os.PathLike)) else SAMPLE_RATE
        poses, latents, x_T, n = [], [], None, 0
        try:
            gen = self._generate(audio, sampling_rate, output_type="np", **kwargs)
        except TypeError as e:  # an argument __call__ does not take
            raise TypeError(str(e).replace("_generate()", "generate_video()")) from None
        first = next(gen)  # input errors surface before a file is opened
        with self.video_writer(path, track, rate, crf, watermark, output_size) as writer:
            for images, z, p, x_T in _chain_first(first, gen):
                writer.write(postprocess_frames(images, "np"))
                poses.append(p.float().cpu())
                latents.append(z.float().cpu())
                n += images.shape[0]
        return DAETalkerOutput(frames=n, poses=torch.cat(poses).numpy(), latents=torch.cat(latents).numpy(),
                               fps=self.fps, fixed_noise=x_T.cpu())


def _chain_first(first, rest):
    yield first
    yield from rest


def _as_pose_array(pose: Any, what: str) -> torch.Tensor:
    try:
        value = torch.as_tensor(np.asarray(pose.cpu() if isinstance(pose, torch.Tensor) else pose, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be numbers (degrees): {e}") from None
    check_pose_range(value.numpy(), what)
    return value


def loop_or_trim(seq: torch.Tensor, n: int) -> torch.Tensor:
    """(M, 3) → (n, 3): the first n rows, or the sequence played forth and back until n rows
    (back-and-forth looping has no jump at the seam)."""
    if seq.shape[0] >= n:
        return seq[:n]
    if seq.shape[0] == 1:
        return seq.expand(n, -1)
    cycle = torch.cat([seq, seq.flip(0)[1:-1]]) if seq.shape[0] > 2 else seq
    reps = -(-n // cycle.shape[0])
    return cycle.repeat(reps, 1)[:n]
