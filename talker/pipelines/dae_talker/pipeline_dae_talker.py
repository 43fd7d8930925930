"""DAE-Talker: speech → semantic latents → DDIM-decoded talking-face frames.

``__call__`` reads as the method: check inputs → load audio → audio features → speech2latent
(latents and head poses) → one fixed noise image x_T → batched DDIM decoding → frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ...audio import DEFAULT_MAX_DURATION, SAMPLE_RATE, load_audio, log_mel, wav2vec2_features
from ...errors import CheckpointError, InputError
from ...models import DAEDecoderUNet, SemanticEncoder, Speech2Latent
from ..ddim import ddim_decode
from ..diffusion_autoencoder.pipeline_diffusion_autoencoder import DiffusionAutoencoderPipeline, _check_steps
from ..images import check_output_type, postprocess_frames
from ..loading import SpeakerCheckpointMixin

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
    inverting real frames) and, for the wav2vec2 front end, ``audio_encoder`` and
    ``feature_extractor``. ``pipe.speaker`` holds the checkpoint's ``speaker.json``.
    """

    model_cpu_offload_seq = "audio_encoder->speech_to_latent->unet"
    _optional_components = ["encoder", "audio_encoder", "feature_extractor"]
    _required_components = ("unet", "scheduler", "speech_to_latent")

    def __init__(
        self,
        unet: DAEDecoderUNet,
        scheduler: DDIMScheduler,
        speech_to_latent: Speech2Latent,
        encoder: SemanticEncoder | None = None,
        audio_encoder: Any = None,
        feature_extractor: Any = None,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            speech_to_latent=speech_to_latent,
            encoder=encoder,
            audio_encoder=audio_encoder,
            feature_extractor=feature_extractor,
        )
        self.speaker: dict = {}

    # --- properties ---------------------------------------------------------------------------

    @property
    def fps(self) -> int:
        return self.speech_to_latent.config.fps

    @property
    def resolution(self) -> int:
        return self.unet.config.sample_size

    @property
    def emotion_names(self) -> tuple[str, ...]:
        return tuple(self.speech_to_latent.config.emotion_names or ())

    @property
    def autoencoder(self) -> DiffusionAutoencoderPipeline:
        """The speaker's diffusion autoencoder (shares this pipeline's modules)."""
        if self.encoder is None:
            raise CheckpointError("this checkpoint has no semantic encoder (encoder/)")
        pipe = DiffusionAutoencoderPipeline(unet=self.unet, encoder=self.encoder, scheduler=self.scheduler)
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    # --- steps of __call__ --------------------------------------------------------------------

    def check_inputs(self, num_inference_steps, pose_mode, frame_batch_size, output_type):
        _check_steps(num_inference_steps)
        if pose_mode not in POSE_MODES:
            raise InputError(f"pose_mode must be one of {', '.join(POSE_MODES)}; got {pose_mode!r}")
        if frame_batch_size is not None and (
            not isinstance(frame_batch_size, int) or isinstance(frame_batch_size, bool) or frame_batch_size < 1
        ):
            raise InputError(f"frame_batch_size must be a positive integer; got {frame_batch_size!r}")
        check_output_type(output_type)

    def encode_audio(self, wave: np.ndarray, n_frames: int) -> torch.Tensor:
        """16 kHz samples → (1, n_frames × feature_rate / fps, feature_dim) features."""
        cfg = self.speech_to_latent.config
        if cfg.audio_frontend == "mel":
            feats = log_mel(wave, n_frames, n_mels=cfg.n_mels, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        else:
            if self.audio_encoder is None:
                raise CheckpointError("this speaker uses the wav2vec2 front end but the checkpoint has no audio_encoder/")
            feats = wav2vec2_features(
                wave, n_frames, self.audio_encoder, self.feature_extractor, feature_rate=cfg.feature_rate
            )
        return feats[None].to(self.speech_to_latent.device)

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

    def default_frame_batch_size(self) -> int:
        return 16 if self._execution_device.type == "cpu" else 64

    # --- the method ---------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        audio: Any,
        sampling_rate: int | None = None,
        num_inference_steps: int = 20,
        pose_mode: str = "predicted",
        pose: Any = None,
        emotion: Mapping[str, float] | Sequence[float] | np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        frame_batch_size: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        fixed_noise: torch.Tensor | None = None,
        max_duration: float | None = DEFAULT_MAX_DURATION,
    ) -> DAETalkerOutput | tuple:
        """Generate the talking-face frames for ``audio``.

        Args:
            audio: a path (wav/flac/ogg/mp3/m4a/webm), or samples as a numpy array / tensor
                ((T,), (T, C) or (C, T)) with ``sampling_rate``.
            sampling_rate: Hz of an array input; any rate is resampled to 16 kHz.
            num_inference_steps: DDIM steps per frame (DAE-Talker: 100).
            pose_mode: "predicted" (from speech), "static" (``pose`` = 3 angles, default the
                speaker's mean pose) or "reference" (``pose`` = (M, 3) degrees, looped
                back and forth or trimmed to N frames; default the speaker's reference pose).
            pose: see ``pose_mode``.
            emotion: {name: intensity in [0, 1]} or a vector in ``emotion_names`` order; None
                or zeros = neutral.
            generator: seeds the fixed noise image x_T.
            frame_batch_size: frames denoised together.
            output_type: "np", "pil" or "pt".
            fixed_noise: use this x_T (1, 3, H, W) instead of drawing one (e.g. an inverted frame).
            max_duration: longest accepted audio in seconds (None: no limit).

        Returns:
            :class:`DAETalkerOutput` (or a tuple when ``return_dict=False``); N = round(duration × fps).
        """
        # 1. check inputs
        self.check_inputs(num_inference_steps, pose_mode, frame_batch_size, output_type)
        emotion_t = self.prepare_emotion(emotion)

        # 2. audio → 16 kHz mono, a whole number of frames
        wave = load_audio(audio, sampling_rate, max_duration=max_duration, fps=self.fps)
        n_frames = wave.shape[0] * self.fps // SAMPLE_RATE
        pose_t = self.prepare_pose(pose_mode, pose, n_frames)

        # 3. speech2latent: one z_sem and one pose per frame
        features = self.encode_audio(wave, n_frames)
        s2l = self.speech_to_latent(features, pose=pose_t, emotion=emotion_t)
        z_sem, poses = s2l.z_sem[0], s2l.pose[0]

        # 4. one fixed noise image for the whole video
        x_T = self.prepare_fixed_noise(generator, fixed_noise)

        # 5. batched DDIM decoding
        batch = frame_batch_size or self.default_frame_batch_size()
        total = -(-n_frames // batch) * num_inference_steps
        with self.progress_bar(total=total) as bar:
            images = ddim_decode(self.unet, self.scheduler, z_sem, x_T, num_inference_steps, batch, bar.update)

        # 6. post-process
        frames = postprocess_frames(images, output_type)
        poses, latents = poses.float().cpu(), z_sem.float().cpu()
        if output_type != "pt":
            poses, latents = poses.numpy(), latents.numpy()
        self.maybe_free_model_hooks()
        out = DAETalkerOutput(frames=frames, poses=poses, latents=latents, fps=self.fps, fixed_noise=x_T.cpu())
        return out if return_dict else out.to_tuple()

    def generate_video(self, audio: Any, path, sampling_rate: int | None = None, crf: int = 18, **kwargs) -> DAETalkerOutput:
        """Generate and write an mp4 (H.264 + AAC) with the input audio as its sound track.

        ``kwargs`` are those of ``__call__``; returns its output (frames as "np")."""
        from ...video import write_video

        kwargs["output_type"] = "np"
        out = self(audio, sampling_rate=sampling_rate, **kwargs)
        track = audio if isinstance(audio, (str, os.PathLike)) else np.asarray(load_audio(audio, sampling_rate, max_duration=None))
        write_video(path, out.frames, audio=track, fps=out.fps, sampling_rate=None if isinstance(track, (str, os.PathLike)) else SAMPLE_RATE, crf=crf)
        return out


def _as_pose_array(pose: Any, what: str) -> torch.Tensor:
    try:
        value = torch.as_tensor(np.asarray(pose.cpu() if isinstance(pose, torch.Tensor) else pose, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be numbers (degrees): {e}") from None
    if not torch.isfinite(value).all():
        raise InputError(f"{what} contains NaN or infinite values")
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
