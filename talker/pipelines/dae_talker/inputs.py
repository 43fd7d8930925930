"""The inputs of one generation, checked before any work: pose, emotion, the fixed noise image and
the settings that stay the same for every frame (:class:`Settings`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from ...defaults import POSE_MODES
from ...errors import InputError
from ...pose import check_pose_range

#: the arguments of ``__call__`` that hold for every frame, which ``stream``, ``live_session`` and
#: ``generate_video`` take by name too; their defaults are ``__call__``'s
FRAME_OPTIONS = ("num_inference_steps", "pose_mode", "pose", "emotion", "generator", "frame_batch_size", "fixed_noise",
                 "decoder", "refine")


def frame_options(options: dict[str, Any], defaults_of: Callable, caller: str) -> dict[str, Any]:
    """``options`` by name, with the defaults of ``defaults_of`` (``__call__``) for the rest; a
    name that is not one of ``FRAME_OPTIONS`` is a TypeError, as for any function."""
    unknown = sorted(set(options) - set(FRAME_OPTIONS))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    params = inspect.signature(defaults_of).parameters
    return {name: options[name] if name in options else params[name].default for name in FRAME_OPTIONS}


@dataclass
class Settings:
    """What ``__call__``, ``stream`` and ``live_session`` were asked for, checked and prepared:
    the same for every frame of the video."""

    steps: int  # denoising steps per frame
    pose_mode: str
    pose: Any  # as given; turned into a sequence per window by ``pose_sequence``
    emotion: torch.Tensor | None  # (1, E) intensities, or None for neutral
    x_T: torch.Tensor  # (1, C, H, W) the one fixed noise image of the video
    unet: Any  # the decoder that renders the frames (``pipe.decoder_for``), resolved once
    scheduler: Any  # and its scheduler
    refine: bool  # through the speaker's refiner (False where it has none)
    frame_batch_size: int  # frames denoised together
    refiner: Any = None  # what runs the refiner, if not the speaker's own (a live session's CUDA graph)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False; got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer; got {value!r}")
    return value


def pose_sequence(pose_mode: str, pose: Any, n_frames: int, s2l, speaker: dict) -> torch.Tensor | None:
    """The pose fed to ``s2l``'s pose projector for ``n_frames`` frames: None (predicted) or
    (1, N, 3) degrees: ``pose`` (3 angles) held still, default the speaker's mean pose
    ("static"), or ``pose`` (M, 3) looped or trimmed, default the speaker's reference pose
    ("reference")."""
    if pose_mode not in POSE_MODES:
        raise InputError(f"pose_mode must be one of {', '.join(POSE_MODES)}; got {pose_mode!r}")
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
            pose = speaker.get("reference_pose")
            if pose is None:
                raise InputError(
                    "pose_mode='reference' needs pose=(M, 3) yaw/pitch/roll degrees; this checkpoint has no reference pose"
                )
        value = _as_pose_array(pose, "reference pose")
        if value.dim() != 2 or value.shape[1] != 3 or value.shape[0] < 1:
            raise InputError(f"a reference pose is (M, 3) yaw, pitch, roll in degrees; got shape {tuple(value.shape)}")
        seq = loop_or_trim(value, n_frames)
    return seq[None].to(s2l.device, s2l.dtype)


def emotion_vector(emotion: Any, names: tuple[str, ...], s2l) -> torch.Tensor | None:
    """A dict of named intensities or a vector in [0, 1] (in ``names`` order) → (1, E), or None
    for neutral."""
    if emotion is None:
        return None
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
    return torch.tensor([values], dtype=s2l.dtype, device=s2l.device)


def noise_image(shape: tuple[int, ...], device, dtype, generator=None, fixed_noise=None) -> torch.Tensor:
    """One noise image x_T of ``shape`` (1, C, H, W) shared by every frame: drawn from
    ``generator``, or ``fixed_noise`` checked."""
    if fixed_noise is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    fixed_noise = torch.as_tensor(fixed_noise)
    if fixed_noise.dim() == 3:
        fixed_noise = fixed_noise[None]
    if tuple(fixed_noise.shape) != shape:
        raise InputError(f"fixed_noise must have shape {shape}; got {tuple(fixed_noise.shape)}")
    return fixed_noise.to(device, dtype)


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
