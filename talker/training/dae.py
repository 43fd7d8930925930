"""``talker train dae``: the diffusion autoencoder (semantic encoder + DDIM decoder).

The loop is DiffAE's: x0 → random t, noise → x_t → eps_theta(x_t, t, Enc(x0)) → MSE on the noise,
encoder and decoder trained jointly by this loss alone; Adam 1e-4, gradient clip 1.0, EMA of the
weights (diffusers' ``EMAModel``), no horizontal flips (they would mirror the head pose).
The run's bookkeeping (accelerator, resume, seeded batches, checkpoints, log) is
:class:`.runs.TrainingRun`, as for every trainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TalkerError
from .configs import DAEConfig
from .data import load_dataset
from .runs import TrainingRun, ema_weights, save_grid, to_model


class DiffusionAutoencoder(nn.Module):
    """Encoder and decoder as one module, so accelerate wraps (and DDP syncs) both."""

    def __init__(self, encoder: nn.Module, unet: nn.Module, scheduler, snr_gamma: float | None = None):
        super().__init__()
        self.encoder, self.unet, self.scheduler, self.snr_gamma = encoder, unet, scheduler, snr_gamma

    def forward(self, x0, t, noise):
        z = self.encoder(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        eps = self.unet(x_t, t, z).sample
        per_image = (eps.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
        alphas_cumprod = self.scheduler.alphas_cumprod.to(t.device)
        return (per_image * loss_weights(alphas_cumprod, t, self.snr_gamma)).mean()


def loss_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, snr_gamma: float | None) -> torch.Tensor:
    """Per-timestep weights of the noise MSE: 1 (DiffAE), or Min-SNR-γ (Hang et al., ICCV 2023):
    min(SNR, γ) / SNR, which stops the nearly clean steps from dominating and converges faster."""
    if not snr_gamma:
        return torch.ones(len(t), device=t.device)
    a = alphas_cumprod[t].float()
    snr = a / (1 - a)
    return snr.clamp(max=snr_gamma) / snr


def build_models(cfg: DAEConfig):
    from diffusers import DDIMScheduler

    from ..models import DAEDecoderUNet, SemanticEncoder

    groups = min(32, cfg.base_channels)
    unet = DAEDecoderUNet(sample_size=cfg.resolution, base_channels=cfg.base_channels,
                          channel_mult=tuple(cfg.channel_mult), num_res_blocks=cfg.num_res_blocks,
                          attention_resolutions=tuple(cfg.attention_resolutions), dropout=cfg.dropout,
                          z_dim=cfg.z_dim, embed_channels=4 * cfg.base_channels, norm_groups=groups)
    encoder = SemanticEncoder(sample_size=cfg.resolution, base_channels=cfg.base_channels,
                              channel_mult=tuple(cfg.encoder_channel_mult), num_res_blocks=cfg.num_res_blocks,
                              attention_resolutions=tuple(cfg.attention_resolutions), dropout=cfg.dropout,
                              z_dim=cfg.z_dim, norm_groups=groups, normalize_z=cfg.normalize_z)
    # clip_sample: DiffAE renders with clip_denoised=True; keeping each step's predicted x0 inside
    # [-1, 1] keeps a decoder that is not perfect on the image manifold (on the bundled speaker
    # after 500 steps: 11 dB reconstructions with it, diverging noise without it)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=True, set_alpha_to_one=True)
    return encoder, unet, scheduler


def _load_frames(clips, resolution: int) -> torch.Tensor:
    frames = np.concatenate([c.frames for c in clips])
    if frames.shape[1] != resolution:
        raise TalkerError(f"the dataset is {frames.shape[1]}px but --resolution is {resolution}; "
                          "prepare it at this resolution")
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # uint8 (F, 3, R, R)


def train_dae(data_dir: str | Path, run_dir: str | Path, cfg: DAEConfig, resume: bool = False,
              progress: bool = True, init_from: str | Path | None = None) -> dict:
    """Train (or resume) a DAE run; returns the final training figures.

    ``init_from``: a speaker checkpoint (or DAE run) whose encoder and decoder weights start a
    new run (fine-tuning, or carrying training over from an earlier machine); its architecture
    replaces the one in ``cfg``."""
    from diffusers.training_utils import EMAModel

    run = TrainingRun(run_dir, cfg, resume, "train dae", progress)
    cfg = run.cfg
    index, clips = load_dataset(data_dir)
    if cfg.resolution is None:  # the dataset's
        cfg.resolution = index["resolution"]
    frames = _load_frames(clips, cfg.resolution)

    encoder, unet, scheduler = build_models(cfg)
    if init_from is not None and run.checkpoint is None:
        from ..models import DAEDecoderUNet

        src = Path(init_from) / "dae" if (Path(init_from) / "dae" / "unet").is_dir() else Path(init_from)
        if not (src / "unet").is_dir() or not (src / "encoder").is_dir():
            raise TalkerError(f"--init-from {init_from}: no unet/ and encoder/ to start from")
        encoder = _encoder_from(src / "encoder", cfg.normalize_z)
        unet = DAEDecoderUNet.from_pretrained(src / "unet", use_safetensors=True, dtype=torch.float32)
        if unet.config.sample_size != cfg.resolution:
            raise TalkerError(f"--init-from {init_from} is {unet.config.sample_size}px, not {cfg.resolution}px")
        cfg.extra["init_from"] = str(init_from)
    model = DiffusionAutoencoder(encoder, unet, scheduler, cfg.snr_gamma)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
    model, optimizer = run.start(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), ema)

    fixed = to_model(frames[torch.linspace(0, len(frames) - 1, 8).long()]).to(run.device)
    stats_frames = frames[torch.linspace(0, len(frames) - 1, min(len(frames), 1024)).long()]
    sample_noise = torch.randn(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(cfg.seed))
    model.train()
    for g in run.steps():  # this step's batch, timesteps and noise depend only on (seed, step, process)
        idx = torch.randint(len(frames), (cfg.batch_size,), generator=g)
        x0 = to_model(frames[idx]).to(run.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g).to(run.device)
        noise = torch.randn(x0.shape, generator=g).to(run.device)
        with run.accelerator.autocast():
            loss = model(x0, t, noise)
        run.update(loss, model, optimizer)
        if run.is_main and run.due(cfg.sample_every or cfg.checkpoint_every):
            run.note(**_sample_grid(run.accelerator.unwrap_model(model), ema, scheduler, fixed, sample_noise,
                                    run.path / "samples" / f"step_{run.step:07d}.png", stats_frames))
            model.train()
        run.end_step()
    elapsed = run.train_time
    processes = run.accelerator.num_processes
    figures = run.figures(images_per_s=run.steps_timed * cfg.batch_size * processes / elapsed if elapsed else math.nan,
                          processes=processes, device=str(run.device))
    figures = run.finish(figures, lambda: export_dae(run.accelerator.unwrap_model(model), ema, scheduler, run.path / "dae",
                                                      stats_frames))
    return {**figures, "steps_this_run": run.steps_timed}


def _encoder_from(path: Path, normalize_z: bool):
    """A saved encoder; with ``normalize_z`` one saved without it gains the (parameter-free)
    standardisation, whose statistics are then measured by training."""
    from safetensors.torch import load_file

    from ..models import SemanticEncoder

    config = dict(SemanticEncoder.load_config(path))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    encoder = SemanticEncoder.from_config({**config, "normalize_z": normalize_z or config.get("normalize_z", False)})
    try:
        missing, unexpected = encoder.load_state_dict(load_file(path / "diffusion_pytorch_model.safetensors"), strict=False)
    except RuntimeError as e:  # shapes
        raise TalkerError(f"{path}: weights do not match the encoder's config.json: {e}") from None
    added = [k for k in missing if k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")]
    if unexpected or len(added) != len(missing):
        raise TalkerError(f"{path}: weights do not match the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return encoder.float()


def refresh_z_stats(encoder: nn.Module, frames_uint8: torch.Tensor, batch_size: int = 64) -> None:
    """Measure the running statistics of ``normalize_z`` for the encoder's current (EMA) weights over
    the given frames (torch's ``update_bn``); does nothing for an encoder without it."""
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules()):
        return
    device = next(encoder.parameters()).device
    update_bn((to_model(frames_uint8[i : i + batch_size]).to(device) for i in range(0, len(frames_uint8), batch_size)),
              encoder)


@torch.no_grad()
def _sample_grid(model, ema, scheduler, images, noise, path: Path, stats_frames: torch.Tensor) -> dict:
    """Originals, then EMA reconstructions decoded from one shared noise image (20 DDIM steps).
    Returns how much the decoder uses z_sem: at t = 500 the error of its x0 estimate with each
    image's own latent and with another image's (``z_use`` = 1 - own/other; 0: z is ignored)."""
    from ..pipelines.ddim import ddim_decode

    t = 500
    a = scheduler.alphas_cumprod[t].to(images.device)
    x_t = a.sqrt() * images + (1 - a).sqrt() * noise.to(images.device, images.dtype)

    def x0_error(zz):
        eps = model.unet(x_t, t, zz).sample
        return ((x_t - (1 - a).sqrt() * eps) / a.sqrt() - images).abs().mean().item()

    with ema_weights(ema, model.parameters()):
        refresh_z_stats(model.encoder, stats_frames)
        model.eval()
        z = model.encoder(images)
        recon = ddim_decode(model.unet, scheduler, z, noise.to(images.device, images.dtype), 20, len(images),
                            precision="float32")
        own, other = x0_error(z), x0_error(z.roll(1, 0))
    save_grid(path, [images, recon])
    return {"x0_error_own_z": own, "x0_error_other_z": other, "z_use": 1 - own / other if other else 0.0}


def export_dae(model, ema, scheduler, out: Path, stats_frames: torch.Tensor) -> None:
    """The EMA weights as ``encoder/``, ``unet/``, ``scheduler/`` (save_pretrained layout), with the
    latent statistics measured for the EMA encoder."""
    with ema_weights(ema, model.parameters()):
        refresh_z_stats(model.encoder, stats_frames)
        model.encoder.save_pretrained(out / "encoder")
        model.unet.save_pretrained(out / "unet")
        scheduler.save_pretrained(out / "scheduler")


def load_dae(run_dir: str | Path):
    """(encoder, unet, scheduler) of a finished DAE run (RUN/dae), or of a speaker checkpoint
    folder (``talker export``), in float32."""
    from diffusers import DDIMScheduler

    from ..models import DAEDecoderUNet, SemanticEncoder

    path = Path(run_dir) / "dae"
    if not (path / "unet").is_dir() and (Path(run_dir) / "model_index.json").is_file():
        path = Path(run_dir)
    if not (path / "unet").is_dir() or not (path / "encoder").is_dir():
        raise TalkerError(f"{run_dir} has no trained DAE (expected {path}/unet and encoder); run `talker train dae` first")
    return (SemanticEncoder.from_pretrained(path / "encoder", use_safetensors=True, torch_dtype=torch.float32),
            DAEDecoderUNet.from_pretrained(path / "unet", use_safetensors=True, torch_dtype=torch.float32),
            DDIMScheduler.from_pretrained(path / "scheduler"))
