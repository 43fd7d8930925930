"""DDIM decoding and inversion of the diffusion autoencoder, shared by both pipelines.

Frames are independent given ``z_sem`` and the fixed noise ``x_T``, so they are decoded in
batches that all start from the same ``x_T`` (DAE-Talker's temporal-consistency trick).
Decoding takes any deterministic diffusers scheduler built from the speaker's DDIM config
(e.g. ``DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``); DDIM runs with eta 0.

``precision`` picks the decoder's compute type: "auto" runs a float32 decoder under bfloat16
autocast on a CPU with native bfloat16 (AVX512-BF16 or AMX: about 2× faster on the bundled
speaker, see bench/speed.py for its frames/s and PSNR) and on a CUDA GPU with bfloat16
(Ampere and later), and leaves everything else as loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from ..defaults import MAX_STEPS, PRECISIONS, SCHEDULERS
from ..errors import InputError


def cpu_native_bf16() -> str | None:
    """How this CPU computes bfloat16 in hardware ("AMX" or "AVX512-BF16"), or None."""
    for kind, name in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return kind
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    return cpu_native_bf16() is not None


def check_steps(num_inference_steps) -> None:
    if (not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool)
            or not 1 <= num_inference_steps <= MAX_STEPS):
        raise InputError(f"num_inference_steps must be an integer in 1–{MAX_STEPS}; got {num_inference_steps!r}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def autocast_dtype(device: torch.device, weights_dtype: torch.dtype, precision: str = "auto") -> torch.dtype | None:
    """The autocast type the decoder runs under, or None for none: "bfloat16" asks for it,
    "float32" for none, "auto" for bfloat16 only with float32 weights on a CPU that has it natively
    or on a CUDA GPU that has it."""
    check_precision(precision)
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and weights_dtype == torch.float32:
        if (device.type == "cpu" and cpu_has_native_bf16()) or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
    return None


def compute_dtype(device: torch.device, weights_dtype: torch.dtype, precision: str = "auto") -> torch.dtype:
    """The type the decoder computes in: its autocast type, or else its weights' own."""
    return autocast_dtype(device, weights_dtype, precision) or weights_dtype


def decoder_autocast(device: torch.device, weights_dtype: torch.dtype, precision: str = "auto"):
    dtype = autocast_dtype(device, weights_dtype, precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def distilled_scheduler(config) -> DDIMScheduler:
    """The DDIM scheduler a distilled decoder (``prediction_type="sample"``, see
    :mod:`talker.training.distill`) runs with: the teacher's noise schedule, the image predicted
    directly, timesteps spaced from the noisiest one (``trailing``: k steps start at t = T − 1,
    where x_T lives, and the last one lands on the image)."""
    return DDIMScheduler.from_config(config, prediction_type="sample", timestep_spacing="trailing", clip_sample=True)


def ddim_decode(
    unet: torch.nn.Module,
    scheduler: DDIMScheduler,
    z_sem: torch.Tensor,
    x_T: torch.Tensor,
    num_inference_steps: int,
    batch_size: int,
    on_step: Callable[[], None] | None = None,
    on_batch: Callable[[torch.Tensor], None] | None = None,
    precision: str = "auto",
    emotion: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Decode images from semantic latents with deterministic DDIM (eta = 0) or another
    deterministic diffusers scheduler.

    Args:
        z_sem: (N, D) semantic latents.
        x_T: (1, C, H, W) noise shared by every image, or (N, C, H, W) one per image.
        batch_size: images denoised together.
        on_step: called after every denoising step of every batch (progress bars).
        on_batch: if given, each finished batch (B, C, H, W) in [-1, 1] is handed to it and
            nothing is kept (constant memory); otherwise all images are returned.
        precision: "auto", "float32" or "bfloat16" (see the module's docstring); the scheduler
            always steps in ``x_T``'s type.
        emotion: (1, E) intensities shared by every image, or (N, E) one per image, for a
            decoder that takes them (``unet.takes_emotion``); ignored by one that does not (its
            speaker shows emotion through z_sem alone) and None for neutral.

    Returns:
        (N, C, H, W) images in [-1, 1], or None when ``on_batch`` consumed them.
    """
    device, dtype = x_T.device, x_T.dtype
    step_kwargs = {"eta": 0.0} if isinstance(scheduler, DDIMScheduler) else {}
    weights_dtype = next(unet.parameters()).dtype
    out = []
    for start in range(0, z_sem.shape[0], batch_size):
        # per batch: multistep solvers keep a history that must not leak into the next batch
        scheduler.set_timesteps(num_inference_steps, device=device)
        z = z_sem[start : start + batch_size].to(device, dtype)
        kwargs = {}
        if emotion is not None and getattr(unet, "takes_emotion", False):
            e = emotion if emotion.shape[0] == 1 else emotion[start : start + batch_size]
            kwargs["emotion"] = e.to(device)
        if x_T.shape[0] == 1:
            x = x_T.expand(z.shape[0], -1, -1, -1).clone()
        else:
            x = x_T[start : start + batch_size].clone()
        # channels-last activations: oneDNN's convolutions run faster on them (the bundled
        # speaker's decoder: 1.6x under bfloat16 with AMX, 1.2x in float32); the frames come
        # back in the usual layout
        x = (x * scheduler.init_noise_sigma).contiguous(memory_format=torch.channels_last)
        for t in scheduler.timesteps:
            with decoder_autocast(device, weights_dtype, precision):
                eps = unet(scheduler.scale_model_input(x, t), t, z, **kwargs).sample
            x = scheduler.step(eps.to(dtype), t, x, **step_kwargs).prev_sample
            if on_step is not None:
                on_step()
        x = x.clamp(-1, 1).contiguous()
        if on_batch is not None:
            on_batch(x)
        else:
            out.append(x)
    return torch.cat(out) if on_batch is None else None


def ddim_invert(
    unet: torch.nn.Module,
    scheduler: DDIMScheduler,
    images: torch.Tensor,
    z_sem: torch.Tensor,
    num_inference_steps: int,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """DiffAE's stochastic encoding: run DDIM backwards from images to ``x_T``.

    Decoding ``(z_sem, x_T)`` with the same number of steps reproduces the images closely.

    Args:
        images: (B, C, H, W) in [-1, 1]; z_sem: (B, D).
    Returns:
        (B, C, H, W) noise ``x_T``.
    """
    inverse = DDIMInverseScheduler.from_config(scheduler.config)
    inverse.set_timesteps(num_inference_steps, device=images.device)
    x = images
    z = z_sem.to(images.device, images.dtype)
    for t in inverse.timesteps:
        eps = unet(x, t, z).sample
        x = inverse.step(eps, t, x).prev_sample
        if on_step is not None:
            on_step()
    return x


def use_scheduler(pipe, name: str) -> None:
    """Swap the DDIM decoder's solver for another deterministic diffusers scheduler (``SCHEDULERS``:
    same training schedule, one x_T per video)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    config = pipe.scheduler.config
    if name == "dpmsolver++":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", thresholding=False)
    elif name == "unipc":
        pipe.scheduler = UniPCMultistepScheduler.from_config(config)
    elif name != "ddim":
        raise InputError(f"the scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")
