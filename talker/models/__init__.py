"""Models of DAE-Talker: the diffusion autoencoder (encoder + decoder UNet), speech2latent, the expression warp, the refiner and the voice gate."""

from .encoder import SemanticEncoder
from .expression import ExpressionWarp
from .refiner import Refiner
from .speech2latent import EMOTIONS, PoseAdaptor, Speech2Latent, Speech2LatentOutput
from .unet import DAEDecoderOutput, DAEDecoderUNet
from .voice_gate import VoiceGate

__all__ = [
    "SemanticEncoder",
    "ExpressionWarp",
    "Refiner",
    "DAEDecoderUNet",
    "DAEDecoderOutput",
    "Speech2Latent",
    "Speech2LatentOutput",
    "PoseAdaptor",
    "EMOTIONS",
    "VoiceGate",
]
