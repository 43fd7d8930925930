"""``talker train dae``: the diffusion autoencoder (semantic encoder + DDIM decoder), and
``talker encode``: EMA-encoder latents of every frame.

The loop is DiffAE's: x0 → random t, noise → x_t → eps_theta(x_t, t, Enc(x0)) → MSE on the noise,
encoder and decoder trained jointly by this loss alone; Adam 1e-4, gradient clip 1.0, EMA of the
weights (diffusers' ``EMAModel``), no horizontal flips (they would mirror the head pose).
``accelerate`` owns devices, processes and mixed precision. Batches are drawn by a generator
seeded with the step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import TalkerError
from .data import load_dataset

CHECKPOINTS = "checkpoints"


@dataclass
class DAEConfig:
    """Everything that defines a DAE training run (saved as RUN/train_config.json)."""

    resolution: int = 64
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    encoder_channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)
    z_dim: int = 512
    normalize_z: bool = True
    dropout: float = 0.0
    batch_size: int = 16
    lr: float = 1e-4
    snr_gamma: float | None = None
    ema_decay: float = 0.999
    max_steps: int = 10000
    checkpoint_every: int = 500
    sample_every: int = 500
    seed: int = 0
    mixed_precision: str = "auto"
    extra: dict = field(default_factory=dict)


class DiffusionAutoencoder(nn.Module):
    """Encoder and decoder as one module, so accelerate wraps (and DDP syncs) both."""

    def __init__(self, encoder: nn.Module, unet: nn.Module, snr_gamma: float | None = None):
        super().__init__()
        self.encoder, self.unet, self.snr_gamma = encoder, unet, snr_gamma

    def forward(self, x0, t, noise, alphas_cumprod):
        z = self.encoder(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps = self.unet(x_t, t, z).sample
        per_image = (eps.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
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


def make_accelerator(mixed_precision: str):
    """An Accelerator; with no GPU it is told so, which is what turns a torchrun/accelerate
    launch of several CPU processes into gloo data parallelism (MULTI_CPU)."""
    from accelerate import Accelerator

    no_gpu = not torch.cuda.is_available() and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    return Accelerator(mixed_precision=_mixed_precision(mixed_precision), cpu=no_gpu)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (one a killed run was still writing is never picked)."""
    ckpts = sorted((p for p in (run / CHECKPOINTS).glob("step_*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("_")[1]))
    return ckpts[-1] if ckpts else None


RUN_LENGTH_FIELDS = ("max_steps", "checkpoint_every", "sample_every", "eval_every")


def resumed_config(run: Path, cfg, print_fn=print):
    """The configuration a resumed run continues with: the one saved in RUN/train_config.json
    (architecture, learning rate, loss weighting, batch, seed), with only the run-length fields
    (``RUN_LENGTH_FIELDS``) taken from ``cfg``. Settings given now that differ from the saved
    ones are named, since they are not applied."""
    import dataclasses

    path = run / "train_config.json"
    if not path.is_file():
        raise TalkerError(f"{run} has checkpoints but no train_config.json; cannot resume it")
    saved = json.loads(path.read_text())
    values = {}
    for f in dataclasses.fields(cfg):
        now = getattr(cfg, f.name)
        if f.name in RUN_LENGTH_FIELDS or f.name not in saved:
            values[f.name] = now
            continue
        value = saved[f.name]
        if isinstance(now, tuple) and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    differ = [f"{k} {values[k]!r} (not {getattr(cfg, k)!r})" for k in values
              if k != "extra" and values[k] != getattr(cfg, k)]
    if differ:
        print_fn(f"resuming with the run's saved settings: {', '.join(differ)}")
    return type(cfg)(**values)


def prune_checkpoints(run: Path, keep: int = 3) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run."""
    for old in sorted((run / CHECKPOINTS).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(accelerator, run: Path, step: int, ema=None) -> None:
    """RUN/checkpoints/step_N: ``accelerator.save_state`` (weights as safetensors, optimizer and RNG
    states), the EMA weights as safetensors (when ``ema`` is given) and the step; older checkpoints
    beyond the newest three are deleted. It is written as ``.partial-step_N`` and renamed once
    complete, so a run killed while saving resumes from the checkpoint before."""
    from safetensors.torch import save_file

    folder = run / CHECKPOINTS
    out = folder / f"step_{step:07d}"
    staging = folder / f".partial-step_{step:07d}"
    if accelerator.is_main_process:
        for stale in folder.glob(".partial-step_*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            state = ema.state_dict()
            shadow = state.pop("shadow_params")
            save_file({f"{i:05d}": p.detach().contiguous().cpu() for i, p in enumerate(shadow)},
                      staging / "ema.safetensors")
            (staging / "ema.json").write_text(json.dumps(state))
        (staging / "trainer_state.json").write_text(json.dumps({"step": step}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        prune_checkpoints(run)


def load_checkpoint(accelerator, ckpt: Path, ema=None) -> int:
    """Restore what :func:`save_checkpoint` wrote (weights-only loads); returns its step."""
    from safetensors.torch import load_file

    accelerator.load_state(str(ckpt))
    if ema is not None:
        ema.load_state_dict({**json.loads((ckpt / "ema.json").read_text()),
                             "shadow_params": list(load_file(ckpt / "ema.safetensors").values())})
    step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    if accelerator.is_main_process:
        _forget_log_after(ckpt.parent.parent / "train_log.jsonl", step)
    accelerator.print(f"resumed from {ckpt} at step {step}")
    return step


def _forget_log_after(log: Path, step: int) -> None:
    """Drop the log entries of steps after ``step`` (and a last line cut short): a killed run
    logged steps its resumed run trains again, and the log keeps one entry per step."""
    if not log.is_file():
        return
    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except json.JSONDecodeError:  # a line cut short by the kill
            return False

    lines = log.read_text().splitlines()
    kept = [line for line in lines if keep(line)]
    if len(kept) != len(lines):
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(log)


def _load_frames(clips, resolution: int) -> torch.Tensor:
    frames = np.concatenate([c.frames for c in clips])
    if frames.shape[1] != resolution:
        raise TalkerError(f"the dataset is {frames.shape[1]}px but --resolution is {resolution}; "
                          "prepare it at this resolution")
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # uint8 (F, 3, R, R)


def _to_model(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 127.5 - 1.0


def save_grid(path: Path, rows: list[torch.Tensor]) -> None:
    """Rows of (B, 3, R, R) images in [-1, 1] → one PNG."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r.clamp(-1, 1)), dim=2) for r in rows], dim=1)
    img = ((grid + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def train_dae(data_dir: str | Path, run_dir: str | Path, cfg: DAEConfig, resume: bool = False,
              progress: bool = True, init_from: str | Path | None = None) -> dict:
    """Train (or resume) a DAE run; returns the final training figures.

    ``init_from``: a speaker checkpoint (or DAE run) whose encoder and decoder weights start a
    new run (fine-tuning, or carrying training over from an earlier machine); its architecture
    replaces the one in ``cfg``."""
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    run = Path(run_dir)
    ckpt = _latest_checkpoint(run) if resume else None
    if ckpt is not None:
        cfg = resumed_config(run, cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    set_seed(cfg.seed)
    _, clips = load_dataset(data_dir)
    frames = _load_frames(clips, cfg.resolution)

    encoder, unet, scheduler = build_models(cfg)
    if init_from is not None and ckpt is None:
        from ..models import DAEDecoderUNet, SemanticEncoder

        src = Path(init_from) / "dae" if (Path(init_from) / "dae" / "unet").is_dir() else Path(init_from)
        if not (src / "unet").is_dir() or not (src / "encoder").is_dir():
            raise TalkerError(f"--init-from {init_from}: no unet/ and encoder/ to start from")
        encoder = _encoder_from(src / "encoder", cfg.normalize_z)
        unet = DAEDecoderUNet.from_pretrained(src / "unet", use_safetensors=True, dtype=torch.float32)
        if unet.config.sample_size != cfg.resolution:
            raise TalkerError(f"--init-from {init_from} is {unet.config.sample_size}px, not {cfg.resolution}px")
        cfg.extra["init_from"] = str(init_from)
    model = DiffusionAutoencoder(encoder, unet, cfg.snr_gamma)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    alphas = scheduler.alphas_cumprod.to(accelerator.device)

    step = 0
    if resume and ckpt is None:
        accelerator.print(f"no checkpoint in {run / CHECKPOINTS}; starting from step 0")
    if ckpt is not None:
        step = load_checkpoint(accelerator, ckpt, ema)
    elif accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")

    fixed = _to_model(frames[torch.linspace(0, len(frames) - 1, 8).long()]).to(accelerator.device)
    stats_frames = frames[torch.linspace(0, len(frames) - 1, min(len(frames), 1024)).long()]
    sample_noise = torch.randn(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(cfg.seed))
    log = run / "train_log.jsonl"
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train dae", disable=not (progress and accelerator.is_main_process))
    train_time, steps_timed, loss_avg = 0.0, 0, None
    while step < cfg.max_steps:
        tic = time.perf_counter()
        # this step's batch, timesteps and noise depend only on (seed, step, process)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + accelerator.process_index)
        idx = torch.randint(len(frames), (cfg.batch_size,), generator=g)
        x0 = _to_model(frames[idx]).to(accelerator.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g).to(accelerator.device)
        noise = torch.randn(x0.shape, generator=g).to(accelerator.device)
        with accelerator.autocast():
            loss = model(x0, t, noise, alphas)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        step += 1
        steps_timed += 1
        train_time += time.perf_counter() - tic  # training alone: no sampling or checkpoints
        value = accelerator.gather(loss.detach()[None]).mean().item()
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        bar.update()
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if accelerator.is_main_process and (step % 50 == 0 or step == cfg.max_steps):
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, "loss": value, "loss_avg": loss_avg}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint(accelerator, run, step, ema)
        if accelerator.is_main_process and (step % cfg.sample_every == 0 or step == cfg.max_steps):
            z_use = _sample_grid(accelerator.unwrap_model(model), ema, scheduler, fixed, sample_noise,
                                 run / "samples" / f"step_{step:07d}.png", stats_frames)
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, **z_use}) + "\n")
            model.train()
    bar.close()
    if loss_avg is None and log.is_file() and log.read_text().strip():  # resumed at its end: the logged loss
        losses = [json.loads(line) for line in log.read_text().splitlines() if '"loss_avg"' in line]
        loss_avg = losses[-1]["loss_avg"] if losses else None
    elapsed = train_time
    figures = {"steps": step, "loss_avg": loss_avg, "steps_per_s": steps_timed / elapsed if elapsed else math.nan,
               "images_per_s": steps_timed * cfg.batch_size * accelerator.num_processes / elapsed if elapsed else math.nan,
               "processes": accelerator.num_processes, "device": str(accelerator.device)}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export_dae(accelerator.unwrap_model(model), ema, scheduler, run / "dae", stats_frames)
        if steps_timed or not (run / "figures.json").is_file():  # a resumed, finished run keeps its figures
            (run / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
        else:
            figures = json.loads((run / "figures.json").read_text())
    accelerator.end_training()
    return {**figures, "steps_this_run": steps_timed}


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
    update_bn((_to_model(frames_uint8[i : i + batch_size]).to(device) for i in range(0, len(frames_uint8), batch_size)),
              encoder)


@torch.no_grad()
def _sample_grid(model, ema, scheduler, images, noise, path: Path, stats_frames: torch.Tensor) -> dict:
    """Originals, then EMA reconstructions decoded from one shared noise image (20 DDIM steps).
    Returns how much the decoder uses z_sem: at t = 500 the error of its x0 estimate with each
    image's own latent and with another image's (``z_use`` = 1 - own/other; 0: z is ignored)."""
    from ..pipelines.ddim import ddim_decode

    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    refresh_z_stats(model.encoder, stats_frames)
    model.eval()
    z = model.encoder(images)
    recon = ddim_decode(model.unet, scheduler, z, noise.to(images.device, images.dtype), 20, len(images),
                        precision="float32")
    t = 500
    a = scheduler.alphas_cumprod[t].to(images.device)
    x_t = a.sqrt() * images + (1 - a).sqrt() * noise.to(images.device, images.dtype)

    def x0_error(zz):
        eps = model.unet(x_t, t, zz).sample
        return ((x_t - (1 - a).sqrt() * eps) / a.sqrt() - images).abs().mean().item()

    own, other = x0_error(z), x0_error(z.roll(1, 0))
    ema.restore(model.parameters())
    save_grid(path, [images, recon])
    return {"x0_error_own_z": own, "x0_error_other_z": other, "z_use": 1 - own / other if other else 0.0}


def export_dae(model, ema, scheduler, out: Path, stats_frames: torch.Tensor) -> None:
    """The EMA weights as ``encoder/``, ``unet/``, ``scheduler/`` (save_pretrained layout), with the
    latent statistics measured for the EMA encoder."""
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    refresh_z_stats(model.encoder, stats_frames)
    model.encoder.save_pretrained(out / "encoder")
    model.unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    ema.restore(model.parameters())


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


@torch.no_grad()
def encode_dataset(data_dir: str | Path, dae_run: str | Path, batch_size: int = 64, progress: bool = True) -> dict:
    """EMA-encoder latents of every frame → DATA/clips/<id>/latents.npy, and their per-dimension
    mean/std → DATA/latents.json."""
    from tqdm.auto import tqdm

    encoder, _, _ = load_dae(dae_run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = encoder.to(device).eval()
    _, clips = load_dataset(data_dir)
    all_z = []
    for clip in tqdm(clips, desc="encoding", unit="clip", disable=not progress):
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)
        if frames.shape[-1] != encoder.config.sample_size:
            raise TalkerError(f"the dataset is {frames.shape[-1]}px but the DAE is {encoder.config.sample_size}px")
        z = torch.cat([encoder(_to_model(frames[i : i + batch_size]).to(device)).cpu()
                       for i in range(0, len(frames), batch_size)]).numpy().astype(np.float32)
        np.save(clip.path / "latents.npy", z)
        all_z.append(z)
    z = np.concatenate(all_z)
    stats = {"dae": str(Path(dae_run).resolve()), "z_dim": int(z.shape[1]), "frames": int(len(z)),
             "mean": z.mean(0).tolist(), "std": z.std(0).tolist()}
    (Path(data_dir) / "latents.json").write_text(json.dumps(stats) + "\n")
    return stats
