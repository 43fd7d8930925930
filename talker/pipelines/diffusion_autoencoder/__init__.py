from .pipeline_diffusion_autoencoder import DiffusionAutoencoderOutput, DiffusionAutoencoderPipeline

__all__ = ["DiffusionAutoencoderPipeline", "DiffusionAutoencoderOutput"]
