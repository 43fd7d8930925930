"""Which decoder renders a speaker's frames, and in how many steps: the distilled few-step decoder
where the speaker has one, else the paper's DDIM decoder (:mod:`talker.pipelines.ddim`)."""

from __future__ import annotations

from ...defaults import DECODERS, DEFAULT_DISTILLED_STEPS, DEFAULT_STEPS, MAX_DISTILLED_STEPS, MAX_STEPS
from ...errors import CheckpointError, InputError
from ..ddim import check_steps, distilled_scheduler
from ..diffusion_autoencoder.pipeline_diffusion_autoencoder import DiffusionAutoencoderPipeline


class DecoderChoiceMixin:
    """``decoder_for``, ``steps_for`` and the speaker's diffusion autoencoder; mixed into
    :class:`DAETalkerPipeline`."""

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

    @property
    def live_decoder(self) -> str:
        """What live input renders with unless told: "light" where the speaker has a light
        decoder, else :attr:`default_decoder`."""
        return "light" if self.light_unet is not None else self.default_decoder

    def default_steps(self, decoder: str | None = None) -> int:
        """Denoising steps used when none are given: 1 for the distilled and light decoders, 10 for DDIM."""
        return DEFAULT_STEPS if (decoder or self.default_decoder) == "ddim" else DEFAULT_DISTILLED_STEPS

    def decoder_for(self, decoder: str | None = None):
        """(unet, scheduler) that render frames: ``decoder`` "distilled" (``distilled_unet`` with its
        DDIM; :func:`talker.pipelines.ddim.distilled_scheduler`), "ddim" (``unet`` with
        ``scheduler``, the paper's decoder), "light" (``light_unet``, a narrower decoder distilled
        from the distilled one, with the same DDIM), or None for :attr:`default_decoder`."""
        decoder = decoder or self.default_decoder
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        if decoder == "ddim":
            return self.unet, self.scheduler
        if decoder == "light":
            if self.light_unet is None:
                raise InputError("this speaker has no light decoder (light_unet/); use decoder='distilled', or make "
                                 "one with `talker train distill --teacher distilled --student-channels 16` and "
                                 "`talker add-light`")
            return self.light_unet, distilled_scheduler(self.scheduler.config)
        if self.distilled_unet is None:
            raise InputError("this speaker has no distilled decoder (distilled_unet/); use decoder='ddim', "
                             "or make one with `talker train distill`")
        return self.distilled_unet, distilled_scheduler(self.scheduler.config)

    def max_steps(self, decoder: str | None = None) -> int:
        """The most denoising steps ``decoder`` takes: 8 for the distilled and light decoders
        (the distill trainer's grid; a light decoder trained for one step renders best at one),
        1000 for DDIM (its training schedule)."""
        return MAX_STEPS if (decoder or self.default_decoder) == "ddim" else MAX_DISTILLED_STEPS

    def steps_for(self, decoder: str | None, num_inference_steps: int | None) -> int:
        """``num_inference_steps``, or ``decoder``'s default when None; an unknown or missing
        decoder, or more steps than the decoder takes, fails here, before any work."""
        self.decoder_for(decoder)
        if num_inference_steps is None:
            return self.default_steps(decoder)
        check_steps(num_inference_steps)
        if num_inference_steps > self.max_steps(decoder):
            raise InputError(f"the {decoder or self.default_decoder} decoder renders in 1–{MAX_DISTILLED_STEPS} steps "
                             f"(default {DEFAULT_DISTILLED_STEPS}); got {num_inference_steps}. More steps are for "
                             "decoder='ddim'")
        return num_inference_steps
