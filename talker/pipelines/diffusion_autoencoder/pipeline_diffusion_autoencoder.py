"""The diffusion autoencoder on its own: images ↔ (z_sem, x_T)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ...errors import InputError
from ...models import DAEDecoderUNet, SemanticEncoder
from ..ddim import check_precision, check_steps, ddim_decode, ddim_invert
from ..images import check_output_type, postprocess_frames, preprocess_images
from ..loading import SpeakerCheckpointMixin


@dataclass
class DiffusionAutoencoderOutput(BaseOutput):
    """images: decoded images ("np": (B, H, W, 3) uint8); z_sem: (B, D); x_T: (B or 1, 3, H, W)."""

    images: np.ndarray | list | torch.Tensor
    z_sem: torch.Tensor
    x_T: torch.Tensor


class DiffusionAutoencoderPipeline(SpeakerCheckpointMixin, DiffusionPipeline):
    """DiffAE: a semantic encoder and a conditional DDIM decoder.

    ``encode`` gives ``z_sem``; ``invert`` (DDIM run backwards) gives the ``x_T`` that reproduces
    an image; ``decode`` renders ``z_sem`` from any ``x_T``. Calling the pipeline autoencodes.
    """

    model_cpu_offload_seq = "encoder->unet"
    _required_components = ("unet", "encoder", "scheduler")
    #: the decoder's compute type: "auto" (bfloat16 autocast on a CPU with native bfloat16),
    #: "float32" or "bfloat16"; see :mod:`talker.pipelines.ddim`
    precision: str = "auto"

    def __init__(self, unet: DAEDecoderUNet, encoder: SemanticEncoder, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, encoder=encoder, scheduler=scheduler)

    @property
    def resolution(self) -> int:
        return self.unet.config.sample_size

    def _tick(self, bar):
        return (lambda: bar.update()) if bar is not None else None

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images (uint8 (B, H, W, 3), PIL, or float (B, 3, H, W) in [0, 1]) → z_sem (B, D)."""
        x = preprocess_images(images, self.resolution, self._execution_device, self.encoder.dtype)
        return self.encoder(x)

    @torch.no_grad()
    def invert(self, images, z_sem: torch.Tensor | None = None, num_inference_steps: int = 50) -> torch.Tensor:
        """Stochastic encoding: images → x_T (B, 3, H, W) such that decode(z_sem, x_T) ≈ images."""
        check_steps(num_inference_steps)
        x = preprocess_images(images, self.resolution, self._execution_device, self.unet.dtype)
        if z_sem is None:
            z_sem = self.encoder(x.to(self.encoder.dtype))
        with self.progress_bar(total=num_inference_steps) as bar:
            return ddim_invert(self.unet, self.scheduler, x, z_sem, num_inference_steps, self._tick(bar))

    @torch.no_grad()
    def decode(
        self,
        z_sem: torch.Tensor,
        x_T: torch.Tensor | None = None,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        batch_size: int = 16,
        output_type: str = "np",
        emotion: torch.Tensor | None = None,
    ):
        """Render z_sem (B, D) from x_T ((1 or B), 3, H, W; one random image shared if None);
        ``emotion``: (1 or B, E) intensities, for a decoder that takes them (see
        :func:`~talker.pipelines.ddim.ddim_decode`)."""
        check_steps(num_inference_steps)
        check_output_type(output_type)
        check_precision(self.precision)
        device, dtype = self._execution_device, self.unet.dtype
        z_sem = torch.as_tensor(z_sem)
        if z_sem.dim() == 1:
            z_sem = z_sem[None]
        if z_sem.dim() != 2 or z_sem.shape[1] != self.unet.config.z_dim:
            raise InputError(f"z_sem must be (B, {self.unet.config.z_dim}); got shape {tuple(z_sem.shape)}")
        shape = (1, self.unet.config.in_channels, self.resolution, self.resolution)
        if x_T is None:
            x_T = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif x_T.shape[1:] != shape[1:] or x_T.shape[0] not in (1, z_sem.shape[0]):
            raise InputError(f"x_T must be (1 or {z_sem.shape[0]}, {shape[1]}, {shape[2]}, {shape[3]}); got {tuple(x_T.shape)}")
        x_T = x_T.to(device, dtype)
        total = -(-z_sem.shape[0] // batch_size) * num_inference_steps
        with self.progress_bar(total=total) as bar:
            images = ddim_decode(self.unet, self.scheduler, z_sem, x_T, num_inference_steps, batch_size, self._tick(bar),
                                 precision=self.precision, emotion=emotion)
        return postprocess_frames(images, output_type)

    @torch.no_grad()
    def __call__(
        self,
        images,
        num_inference_steps: int = 20,
        invert: bool = False,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Autoencode: z_sem from the encoder, x_T from inversion (``invert=True``) or one shared
        random image, then DDIM decoding."""
        z_sem = self.encode(images)
        if invert:
            x_T = self.invert(images, z_sem, num_inference_steps)
        else:
            shape = (1, self.unet.config.in_channels, self.resolution, self.resolution)
            x_T = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        out = self.decode(z_sem, x_T, num_inference_steps, output_type=output_type)
        self.maybe_free_model_hooks()
        result = DiffusionAutoencoderOutput(images=out, z_sem=z_sem, x_T=x_T)
        return result if return_dict else result.to_tuple()
