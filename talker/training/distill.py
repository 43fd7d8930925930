"""``talker train distill``: a few-step decoder distilled from a speaker's DDIM decoder.

DAE-Talker renders every frame with 100 DDIM steps. With fewer DDIM steps the decoder leaves
grain in the frames (bench/speed.py: 23.6 dB from true latents at 100 steps, 15.6 dB at 10), and
higher-order solvers do worse still, because its noise prediction at high noise levels is poor.
This trains a student that renders what the 100-step teacher renders, in 1 to 8 steps.

The method (reflow-style trajectory distillation, Liu et al., "Flow Straight and Fast", ICLR 2023,
in the DDIM parameterisation of Song et al., ICLR 2021):

1. **Pairs.** For many (x_T, z_sem), run the teacher's deterministic DDIM (``teacher_steps``,
   clip_sample as the teacher renders) from x_T to its image x̂0.
2. **Line.** Let ε̂ = (x_T − √ᾱ_T·x̂0) / √(1 − ᾱ_T): the noise that x_T stands for. DDIM with a
   perfect x0 estimate moves along x_t = √ᾱ_t·x̂0 + √(1 − ᾱ_t)·ε̂ whatever its step sizes.
3. **Student.** The teacher's UNet, fine-tuned to predict x̂0 itself (``prediction_type="sample"``)
   from (x_t, t, z_sem) on that line: MSE(student(x_t, t, z), x̂0), t drawn half from the
   timesteps that k-step DDIM (trailing spacing, k = 1…8) visits and half uniformly.
   DDIM with the student then reaches x̂0 in any of those step counts.

**The person's own frames** (``frames_share``). Trained on the teacher alone, the student also
learns its blur, and the last details of a 64-pixel mouth (lips that meet) are the first a
two-step student loses. A share of every batch can instead be the dataset's own frames: x0 is
the frame, z_sem its encoded latent, x_T fresh noise on the same line. ``motion_weight`` weights
the loss (on teacher pairs and frames alike) by where the speaker's frames change over time
(1 + w · per-pixel temporal std / its mean: mouth, eyes, the head's outline). ``init_student`` continues from an existing distilled
decoder, and ``frames_share=1`` with ``pairs=0`` needs no teacher pairs at all (what a CPU can
afford): the figures are then PSNR against held-out frames of the person.

**A light decoder** (``teacher="distilled"``, ``student_channels``): the teacher is then a
speaker's distilled decoder at its own few steps (``teacher_steps``, 1-8; its pairs cost one
UNet pass each, so a CPU makes thousands in minutes), and the student a new, narrower UNet of the
same design (``student_channels`` base width; at 16 a third of the bundled decoder's time per
frame on a CPU), trained on the same line, for one step mostly (``grid_steps`` 1, ``grid_share``
0.8). A teacher that takes emotion renders a share of the pairs (``emotion_share``) with random
intensities, and the student learns its emotion input from them. ``talker add-light`` stores the result as the speaker's ``light_unet``, which live
input renders with.

Pairs are cached in RUN/pairs.safetensors, so a resumed run skips them. x_T differs per pair (a
video draws its own); z_sem comes from the dataset's latents (``talker encode``), half of the
time mixed with another frame's (speech2latent's predictions lie between the frames' latents).
Held-out clips give the validation figure: the student's PSNR against the teacher's 100-step
frames at 1/2/4/8 steps, with teacher DDIM at the same step counts for reference.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import DEFAULT_DISTILLED_STEPS, MAX_DISTILLED_STEPS
from ..errors import TalkerError
from ..pipelines.ddim import distilled_scheduler
from .configs import DistillConfig
from .data import load_dataset, split_clips
from .runs import TrainingRun, save_grid

EVAL_STEPS = (1, 2, 4, 8)


def timestep_grid(teacher_config, steps: tuple[int, ...]) -> torch.Tensor:
    """Every timestep that k-step student DDIM visits, for k in ``steps``."""
    scheduler = distilled_scheduler(teacher_config)
    visited = set()
    for k in steps:
        scheduler.set_timesteps(k)
        visited.update(int(t) for t in scheduler.timesteps)
    return torch.tensor(sorted(visited))


def line_point(x0: torch.Tensor, x_T: torch.Tensor, t: torch.Tensor, scheduler, t_start: int) -> torch.Tensor:
    """x_t on the DDIM line through (x_T at ``t_start``) and x0: the noise ε̂ that x_T stands for,
    added to x0 at ``t`` (√ᾱ_t·x0 + √(1 − ᾱ_t)·ε̂, ``scheduler.add_noise``)."""
    a_T = scheduler.alphas_cumprod[t_start].to(x0.device)
    eps = (x_T - a_T.sqrt() * x0) / (1 - a_T).sqrt()
    return scheduler.add_noise(x0, eps, t)


def motion_weights(frames: np.ndarray, weight: float) -> torch.Tensor:
    """(H, W) loss weights from (F, H, W, 3) uint8 frames: 1 + ``weight`` × the per-pixel
    temporal standard deviation over its mean (where the person's face moves)."""
    std = torch.from_numpy(frames).float().std(0).mean(-1)
    return 1 + weight * std / std.mean().clamp_min(1e-6)


def frames_to_x0(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) in [-1, 1], the decoder's image range."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2) / 127.5 - 1


def frame_pairs(clips, n: int, channels: int, seed: int) -> dict[str, torch.Tensor]:
    """n (x_T, z_sem, x0) triples from held-out clips' own frames and latents, evenly spread."""
    frames = np.concatenate([c.frames for c in clips])
    z = latent_bank(clips)
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    x0 = frames_to_x0(frames[idx])
    x_T = torch.randn(x0.shape[0], channels, *x0.shape[2:], generator=torch.Generator().manual_seed(seed))
    return {"x_T": x_T, "z_sem": z[idx], "x0": x0}


def latent_bank(clips) -> torch.Tensor:
    """The clips' frame latents (``talker encode``), (F, D) float32."""
    return torch.from_numpy(np.concatenate([c.latents() for c in clips])).float()


def mix_latents(z: torch.Tensor, share: float, g: torch.Generator) -> torch.Tensor:
    """Replace a ``share`` of the latents by a random blend with another latent of the batch."""
    if share <= 0 or len(z) < 2:
        return z
    pick = torch.rand(len(z), generator=g) < share
    lam = torch.rand(len(z), 1, generator=g)
    other = z[torch.randperm(len(z), generator=g)]
    return torch.where(pick[:, None], lam * z + (1 - lam) * other, z)


def random_emotions(n: int, dim: int, share: float, g: torch.Generator) -> torch.Tensor:
    """(n, dim) intensities: a ``share`` of the rows random (each emotion present with
    probability 0.35 at a uniform intensity, so single emotions and mixes), the rest neutral."""
    rows = torch.rand(n, 1, generator=g) < share
    present = torch.rand(n, dim, generator=g) < 0.35
    return torch.rand(n, dim, generator=g) * present * rows


@torch.no_grad()
def teacher_pairs(unet, scheduler, z_bank: torch.Tensor, n: int, cfg: DistillConfig, device, precision: str,
                  seed: int, bar=None) -> dict[str, torch.Tensor]:
    """n (x_T, z_sem, x̂0) triples: the teacher's ``teacher_steps``-step DDIM from its own x_T;
    with ``emotion`` (n, E) too where the teacher takes emotion and ``cfg.emotion_share`` > 0."""
    from ..pipelines.ddim import ddim_decode

    g = torch.Generator().manual_seed(seed)
    res, ch = unet.config.sample_size, unet.config.in_channels
    with_emotion = getattr(unet, "takes_emotion", False) and cfg.emotion_share > 0
    out = {"x_T": [], "z_sem": [], "x0": []} | ({"emotion": []} if with_emotion else {})
    for start in range(0, n, cfg.pair_batch):
        b = min(cfg.pair_batch, n - start)
        z = mix_latents(z_bank[torch.randint(len(z_bank), (b,), generator=g)], cfg.z_mix, g)
        x_T = torch.randn(b, ch, res, res, generator=g)
        e = random_emotions(b, unet.config.emotion_dim, cfg.emotion_share, g) if with_emotion else None
        x0 = ddim_decode(unet, scheduler, z.to(device), x_T.to(device), cfg.teacher_steps, b, precision=precision,
                         emotion=None if e is None else e.to(device))
        out["x_T"].append(x_T.half())
        out["z_sem"].append(z)
        out["x0"].append(x0.cpu().half())
        if with_emotion:
            out["emotion"].append(e)
        if bar is not None:
            bar.update(b)
    return {k: torch.cat(v).contiguous() for k, v in out.items()}


@torch.no_grad()
def evaluate_student(student, teacher, scheduler, val: dict[str, torch.Tensor], device, precision: str) -> dict:
    """PSNR (dB, images in [0, 1]) against the validation targets (the teacher's 100-step frames,
    or the person's held-out frames): the student at each of ``EVAL_STEPS``, and teacher DDIM at
    the same step counts."""
    from ..pipelines.ddim import ddim_decode

    target = val["x0"].float().to(device)
    z, x_T = val["z_sem"].to(device), val["x_T"].float().to(device)
    e = val["emotion"].to(device) if "emotion" in val else None
    fast = distilled_scheduler(scheduler.config)

    def psnr(x):
        mse = ((x.float() - target) / 2).pow(2).mean().clamp_min(1e-10)
        return round(float(-10 * torch.log10(mse)), 3)

    was_training = student.training
    student.eval()
    figures = {"student": {}, "teacher_ddim": {}}
    for k in EVAL_STEPS:
        figures["student"][str(k)] = psnr(ddim_decode(student, fast, z, x_T, k, len(z), precision=precision, emotion=e))
        figures["teacher_ddim"][str(k)] = psnr(ddim_decode(teacher, scheduler, z, x_T, k, len(z), precision=precision,
                                                           emotion=e))
    student.train(was_training)
    return figures


def load_teacher(model_dir: str | Path, teacher: str = "ddim"):
    """(unet, scheduler) of a speaker checkpoint or a DAE run (RUN/dae): its DDIM decoder, or
    with ``teacher="distilled"`` a speaker's distilled decoder and the DDIM it runs with."""
    from diffusers import DDIMScheduler

    from ..models import DAEDecoderUNet

    root = Path(model_dir)
    src = root / "dae" if (root / "dae" / "unet").is_dir() else root
    if not (src / "unet").is_dir() or not (src / "scheduler").is_dir():
        raise TalkerError(f"{model_dir}: no unet/ and scheduler/ to distil (a speaker checkpoint or a DAE run)")
    scheduler = DDIMScheduler.from_pretrained(src / "scheduler")
    if teacher == "distilled":
        if not (src / "distilled_unet").is_dir():
            raise TalkerError(f"{model_dir}: no distilled_unet/ to teach from (a speaker checkpoint with a distilled "
                              "decoder); or use --teacher ddim")
        return load_student(src), distilled_scheduler(scheduler.config)
    unet = DAEDecoderUNet.from_pretrained(src / "unet", use_safetensors=True, dtype=torch.float32)
    if unet.config.prediction_type != "epsilon":
        raise TalkerError(f"{model_dir}: its decoder is already distilled (prediction_type {unet.config.prediction_type!r})")
    return unet, scheduler


def new_student(teacher, channels: int):
    """A new decoder of the teacher's design at base width ``channels`` (GroupNorm groups that
    divide every level's width), predicting the image (``prediction_type="sample"``)."""
    from ..models import DAEDecoderUNet

    groups = math.gcd(channels, teacher.config.norm_groups)
    return DAEDecoderUNet.from_config(teacher.config, base_channels=channels, norm_groups=groups,
                                      prediction_type="sample")


def load_student(path: str | Path):
    """A distilled decoder (to continue training, to teach, to add to a speaker): RUN/distilled_unet
    of a distill run, a speaker checkpoint with distilled_unet/, or the folder itself."""
    from ..models import DAEDecoderUNet

    root = Path(path)
    src = next((d for d in (root / "distilled_unet", root) if (d / "config.json").is_file()), None)
    if src is None:
        raise TalkerError(f"{path}: no distilled decoder there (distilled_unet/ of a distill run or a speaker)")
    unet = DAEDecoderUNet.from_pretrained(src, use_safetensors=True, dtype=torch.float32)
    if unet.config.prediction_type != "sample":
        raise TalkerError(f"{path}: not a distilled decoder (prediction_type {unet.config.prediction_type!r})")
    return unet


def distill_decoder(model_dir: str | Path, data_dir: str | Path, run_dir: str | Path, cfg: DistillConfig,
                    resume: bool = False, progress: bool = True) -> dict:
    """Distil (or resume distilling) the decoder of ``model_dir`` on the latents of the prepared,
    encoded dataset ``data_dir``; the student lands in RUN/distilled_unet. Returns the figures."""
    import copy

    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    run = TrainingRun(run_dir, cfg, resume, "distil decoder", progress)
    cfg = run.cfg
    for name in ("teacher_steps", "batch_size", "max_steps", "pair_batch"):
        if getattr(cfg, name) < 1:
            raise TalkerError(f"{name} must be at least 1; got {getattr(cfg, name)}")
    if not 0.0 <= cfg.frames_share <= 1.0:
        raise TalkerError(f"frames_share must be in [0, 1]; got {cfg.frames_share}")
    if cfg.motion_weight < 0:
        raise TalkerError(f"motion_weight must be at least 0; got {cfg.motion_weight}")
    if cfg.pairs < (0 if cfg.frames_share == 1.0 else 1):
        raise TalkerError(f"pairs must be at least 1 unless frames_share is 1 (frames only); got {cfg.pairs}")
    if cfg.teacher == "distilled" and cfg.teacher_steps > MAX_DISTILLED_STEPS:
        raise TalkerError(f"a distilled teacher renders in 1-{MAX_DISTILLED_STEPS} steps; got --teacher-steps "
                          f"{cfg.teacher_steps} (its default is {DEFAULT_DISTILLED_STEPS})")
    if cfg.student_channels is not None and (cfg.student_channels < 1 or cfg.init_student):
        raise TalkerError("student_channels must be a positive width, and a new student does not continue "
                          f"--init-student; got {cfg.student_channels} with init_student {cfg.init_student!r}")
    if not 0.0 <= cfg.emotion_share <= 1.0:
        raise TalkerError(f"emotion_share must be in [0, 1]; got {cfg.emotion_share}")
    device = run.device
    precision = "bfloat16" if device.type == "cuda" and run.accelerator.mixed_precision == "bf16" else "float32"

    teacher, scheduler = load_teacher(model_dir, cfg.teacher)
    teacher = teacher.to(device).eval().requires_grad_(False)
    _, clips = load_dataset(data_dir)
    train_clips, held = split_clips(clips)
    z_train, z_held = latent_bank(train_clips), latent_bank(held or train_clips)
    if z_train.shape[1] != teacher.config.z_dim:
        raise TalkerError(f"the dataset's latents are {z_train.shape[1]}-d but the decoder takes {teacher.config.z_dim}-d")

    if cfg.frames_share > 0 or cfg.motion_weight:
        bank_frames = np.concatenate([c.frames for c in train_clips])
        if len(bank_frames) != len(z_train):
            raise TalkerError(f"{data_dir}: the clips' frames and latents differ in length; run `talker encode` again")
        weights = motion_weights(bank_frames[:: max(1, len(bank_frames) // 4096)], cfg.motion_weight).to(device)
    pairs_file, val_file = run.path / "pairs.safetensors", run.path / "val_pairs.safetensors"
    pairs = load_file(pairs_file) if pairs_file.is_file() and val_file.is_file() else None
    if cfg.pairs == 0:  # the person's frames only: validated on held-out frames
        pairs, val = None, frame_pairs(held or train_clips, 64, teacher.config.in_channels, cfg.seed + 1)
    elif pairs is not None and pairs["x0"].shape[0] == cfg.pairs:
        val = load_file(val_file)
        run.accelerator.print(f"teacher pairs from {pairs_file}")
    else:
        tic = time.perf_counter()
        with tqdm(total=cfg.pairs + 64, desc=f"teacher DDIM {cfg.teacher_steps} steps", unit="frame",
                  disable=not progress) as bar:
            val = teacher_pairs(teacher, scheduler, z_held, 64, cfg, device, precision, cfg.seed + 1, bar)
            pairs = teacher_pairs(teacher, scheduler, z_train, cfg.pairs, cfg, device, precision, cfg.seed, bar)
        pair_seconds = time.perf_counter() - tic
        cfg.extra["pair_frames_per_s"] = round((cfg.pairs + 64) / pair_seconds, 2)
        run.save_config()  # with the teachers' speed
        if run.is_main:
            save_file(pairs, pairs_file)
            save_file(val, val_file)

    if cfg.init_student:
        student = load_student(cfg.init_student).to(device).train().requires_grad_(True)
    elif cfg.student_channels:
        torch.manual_seed(cfg.seed)
        student = new_student(teacher, cfg.student_channels).to(device).train()
    else:
        student = copy.deepcopy(teacher).train().requires_grad_(True)
        student.register_to_config(prediction_type="sample")
    ema = EMAModel(student.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4)
    scheduler.set_timesteps(cfg.teacher_steps)
    t_start = int(scheduler.timesteps[0])  # where the teacher put x_T
    grid = timestep_grid(scheduler.config, tuple(cfg.grid_steps))
    n_train = scheduler.config.num_train_timesteps
    student, optimizer = run.start(student, torch.optim.Adam(student.parameters(), lr=cfg.lr), ema)

    for g in run.steps():
        n_frames = round(cfg.batch_size * cfg.frames_share)
        n_pairs = cfg.batch_size - n_frames
        idx = torch.randint(len(pairs["x0"]), (n_pairs,), generator=g) if n_pairs else torch.zeros(0, dtype=torch.long)
        x0 = pairs["x0"][idx].float() if n_pairs else torch.zeros(0)
        x_T = pairs["x_T"][idx].float() if n_pairs else torch.zeros(0)
        z = pairs["z_sem"][idx] if n_pairs else torch.zeros(0)
        e = pairs["emotion"][idx] if n_pairs and "emotion" in pairs else None
        if n_frames:  # the person's own frames as targets, their latents, fresh noise
            fi = torch.randint(len(bank_frames), (n_frames,), generator=g)
            f0 = frames_to_x0(bank_frames[fi.numpy()])
            fT = torch.randn(f0.shape, generator=g)
            x0, x_T, z = (torch.cat([a, b]) if n_pairs else b for a, b in ((x0, f0), (x_T, fT), (z, z_train[fi])))
            if e is not None:  # the frames' rows neutral
                e = torch.cat([e, e.new_zeros(n_frames, e.shape[1])])
        x0, x_T, z = x0.to(device), x_T.to(device), z.to(device)
        on_grid = torch.rand(cfg.batch_size, generator=g) < cfg.grid_share
        t = torch.where(on_grid, grid[torch.randint(len(grid), (cfg.batch_size,), generator=g)],
                        torch.randint(0, n_train, (cfg.batch_size,), generator=g)).to(device)
        x_t = line_point(x0, x_T, t, scheduler, t_start)
        with run.accelerator.autocast():
            pred = student(x_t, t, z, emotion=None if e is None else e.to(device)).sample
        err = (pred.float() - x0).pow(2)
        loss = (err * weights).mean() if cfg.motion_weight else err.mean()
        run.update(loss, student, optimizer)
        if run.is_main and run.due(cfg.eval_every):
            model = run.accelerator.unwrap_model(student)
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
            figures = evaluate_student(model, teacher, scheduler, val, device, precision)
            ema.restore(model.parameters())
            run.note(val_psnr=figures)
            target = "the teacher" if cfg.pairs else "held-out frames"
            run.bar.write(f"step {run.step}: student PSNR vs {target} {figures['student']} "
                          f"(teacher DDIM {figures['teacher_ddim']})")
        run.end_step()

    figures = run.figures(device=str(device), teacher=cfg.teacher, teacher_steps=cfg.teacher_steps,
                          student_channels=run.accelerator.unwrap_model(student).config.base_channels, pairs=cfg.pairs,
                          pair_frames_per_s=cfg.extra.get("pair_frames_per_s"), frames_share=cfg.frames_share,
                          motion_weight=cfg.motion_weight, init_student=cfg.init_student,
                          val_target="teacher" if cfg.pairs else "frames")

    def export():
        from ..pipelines.ddim import ddim_decode

        model = run.accelerator.unwrap_model(student)
        ema.copy_to(model.parameters())
        figures["val_psnr"] = evaluate_student(model, teacher, scheduler, val, device, precision)
        model.save_pretrained(run.path / "distilled_unet")
        z_grid = val["z_sem"][:8].to(device)
        x_grid = val["x_T"][:1].float().to(device)
        with torch.no_grad():
            rows = [ddim_decode(teacher, scheduler, z_grid, x_grid, cfg.teacher_steps, 8, precision=precision)]
            rows += [ddim_decode(model, distilled_scheduler(scheduler.config), z_grid, x_grid, k, 8, precision=precision)
                     for k in EVAL_STEPS]
        save_grid(run.path / "samples.png", [r.float().cpu() for r in rows])

    return run.finish(figures, export)
