"""Shared fixtures: tiny random DAE-Talker components and real audio files.

The Hub is never contacted: the variables below are read by huggingface_hub at import time, so
they are set before anything imports it.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

RES = 16
Z_DIM = 16


def randomize_zero_init(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised layers (DiffAE's output convs) make an untrained model ignore its
    conditions; tests give them small random weights so every input visibly matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and (p == 0).all():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def tiny_components(frontend: str = "mel", seed: int = 0) -> dict:
    from diffusers import DDIMScheduler

    from talker import DAEDecoderUNet, SemanticEncoder, Speech2Latent

    torch.manual_seed(seed)
    common = dict(sample_size=RES, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(8,), z_dim=Z_DIM, norm_groups=4, dropout=0.0)
    unet = randomize_zero_init(DAEDecoderUNet(embed_channels=32, **common), seed)
    encoder = randomize_zero_init(SemanticEncoder(**common), seed + 1)
    s2l_kw = dict(hidden_size=32, num_heads=2, ffn_size=64, conv_kernel_size=5, num_encoder_layers=1,
                  num_decoder_layers=1, latent_dim=Z_DIM, pose_predictor_channels=16,
                  pose_predictor_kernel_size=3, dropout=0.0)
    components = {}
    if frontend == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                             conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32)
        components["audio_encoder"] = Wav2Vec2Model(cfg).eval()
        components["feature_extractor"] = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000,
                                                                   do_normalize=True, return_attention_mask=False)
        s2l = Speech2Latent(audio_frontend="wav2vec2", feature_dim=32, feature_rate=50, **s2l_kw)
    else:
        s2l = Speech2Latent(**s2l_kw)
    s2l = randomize_zero_init(s2l, seed + 2)
    s2l.set_statistics(pose_mean=[2.0, -1.0, 0.5], pose_std=[5.0, 3.0, 2.0])
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                              beta_end=0.02, clip_sample=False)
    components.update(unet=unet.eval(), scheduler=scheduler, speech_to_latent=s2l.eval(), encoder=encoder.eval())
    return components


def tiny_pipeline(frontend: str = "mel"):
    from talker import DAETalkerPipeline

    pipe = DAETalkerPipeline(**tiny_components(frontend))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def speech_like(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-rate modulated harmonic signal with pauses: (T,) or (T, C) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)
    x = 0.3 * voiced * envelope + 0.005 * rng.standard_normal(t.shape)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=1)
    return x


def write_audio(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}[path.suffix]
    sf.write(path, speech_like(seconds, rate, channels), rate, format=fmt[0], subtype=fmt[1])
    return path


@pytest.fixture
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="session")
def speaker_dir(tmp_path_factory) -> Path:
    """A tiny random speaker saved with save_pretrained (with a speaker.json)."""
    path = tmp_path_factory.mktemp("speaker") / "tiny-speaker"
    p = tiny_pipeline()
    p.speaker = {"name": "tiny", "consent": "random weights for tests",
                 "reference_pose": (np.stack([np.linspace(-5, 5, 40), np.zeros(40), np.zeros(40)], 1)).tolist()}
    p.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def live_speaker_dir(tmp_path_factory) -> Path:
    """The tiny speaker with a streaming speech2latent (chunks of 3 frames) for live input."""
    from talker import Speech2Latent

    path = tmp_path_factory.mktemp("speaker") / "tiny-live-speaker"
    p = tiny_pipeline()
    config = {k: v for k, v in p.speech_to_latent.config.items() if not k.startswith("_")}
    p.register_modules(live_speech_to_latent=Speech2Latent(**{**config, "chunk_frames": 3}).eval())
    p.speaker = {"name": "tiny live", "consent": "random weights for tests"}
    p.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, speaker_dir) -> tuple[Path, str]:
    """A Hugging Face Hub cache folder holding the tiny speaker as repo ``talker-tests/tiny-speaker``."""
    cache = tmp_path_factory.mktemp("hub-cache")
    repo_id = "talker-tests/tiny-speaker"
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(speaker_dir, repo / "snapshots" / sha)
    return cache, repo_id


@pytest.fixture(scope="session")
def wav_3s(tmp_path_factory) -> Path:
    return write_audio(tmp_path_factory.mktemp("audio") / "speech.wav", 3.0, 16000)
