"""``talker train refiner``: the speaker at 4× (or 8×) the decoder's resolution.

The truth is the dataset's crops at the refiner's resolution (``talker prepare
--refiner-resolution``); the inputs are what the speaker's own decoder makes of those frames
(encoded by its semantic encoder, decoded by its default decoder and steps from a fresh noise
image each), so that the refiner learns the blur and the errors it will see in use, not a
bicubic downscale. They are rendered once and cached (``RUN/inputs.safetensors``).

A decoder's rendering differs from its truth in more than blur (a few pixels of pose, the
expression's details), and against misaligned targets a pixel loss learns to blur; so a share of
each batch (``aligned_share``) takes as input the truth itself, downscaled, blurred by a random
amount and with a little noise (matched degradations, aligned with their targets): those teach
the detail. Training is on random patches (``patch`` low-resolution pixels square; the reference
frame is cut at the same place): an L1 loss plus an L1 loss on image gradients (finite
differences), which pulls edges (lips, teeth, eyes, hair) against the over-smoothing of a pixel
loss alone; with ``adv_weight`` also an adversarial term, from a patch discriminator trained
alongside on the truth against the refined patches (hinge loss, as the super-resolution GANs
that restore texture a pixel loss averages away: SRGAN, ESRGAN). With ``warp_reference`` the
refiner also warps its reference frame's detail to each frame; an L1 loss between the warped reference and the truth (``warp_weight``) teaches the flow
directly. EMA weights, checkpoints and ``--resume`` as for the other stages; ``--init-from``
continues a trained refiner (with, e.g., another loss weight) in a new run. Held-out clips score PSNR against
their truth and sharpness (mean gradient magnitude ÷ the truth's), for the refiner and for
bicubic upscaling of the same decoder frames (``RUN/train_log.jsonl``); ``RUN/samples/`` holds
grids of truth, bicubic and refined frames; ``RUN/refiner`` the EMA weights of the last step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TalkerError
from .configs import RefinerConfig
from .data import load_dataset, split_clips
from .runs import LOG_EVERY, TrainingRun, save_grid, to_model


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of (B, C, H, W) images."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def sharpness(x: torch.Tensor) -> float:
    """Mean gradient magnitude of (B, 3, H, W) images in [-1, 1]."""
    gx, gy = gradients(x.float())
    return float(torch.sqrt(gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of images in [-1, 1], averaged over frames."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def degrade(hi: torch.Tensor, scale: int, g: torch.Generator, max_sigma: float = 1.2, max_noise: float = 0.02) -> torch.Tensor:
    """(B, 3, H, W) truth in [-1, 1] → (B, 3, H/scale, W/scale) inputs aligned with it: area
    downscaling, a Gaussian blur of a random width (up to ``max_sigma`` low-resolution pixels,
    the decoder's softness and more) and a little noise, per image."""
    lo = F.avg_pool2d(hi, scale)
    b = lo.shape[0]
    sigma = torch.rand(b, generator=g) * max_sigma + 1e-3
    x = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(lo)  # (B, 7)
    c = lo.shape[1]
    flat = lo.reshape(1, b * c, *lo.shape[-2:])
    kx = kernel.repeat_interleave(c, 0)[:, None, None, :]
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="replicate"), kx, groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="replicate"), kx.transpose(-1, -2), groups=b * c)
    noise = torch.randn(lo.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) * max_noise)
    return (flat.reshape(lo.shape) + noise.to(lo)).clamp(-1, 1)


def refiner_loss(out: torch.Tensor, truth: torch.Tensor, grad_weight: float) -> torch.Tensor:
    loss = (out - truth).abs().mean()
    if grad_weight:
        (ox, oy), (tx, ty) = gradients(out), gradients(truth)
        loss = loss + grad_weight * ((ox - tx).abs().mean() + (oy - ty).abs().mean())
    return loss


class PatchDiscriminator(torch.nn.Module):
    """A patch discriminator (PatchGAN, Isola et al., CVPR 2017) with spectral normalisation
    (Miyato et al., ICLR 2018): (B, 3, H, W) images in [-1, 1] → (B, 1, H/8, W/8) logits, each
    judging whether a ~46-pixel patch looks like the speaker's real frames. Trained alongside the
    refiner (``--adv-weight``), it penalises the over-smoothing that a pixel loss against
    slightly misaligned targets leaves (READ Avatars' point about blurred mouths)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        sn = torch.nn.utils.parametrizations.spectral_norm
        layers, ch_in = [], 3
        for ch in (channels, channels * 2, channels * 4):
            layers += [sn(torch.nn.Conv2d(ch_in, ch, 4, stride=2, padding=1)), torch.nn.LeakyReLU(0.2)]
            ch_in = ch
        layers.append(sn(torch.nn.Conv2d(ch_in, 1, 3, padding=1)))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge loss of a discriminator (real above 1, refined below -1)."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def pick_frames(clips, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (clip, frame) pairs spread over ``clips`` (all frames where they are fewer)."""
    every = [(c, f) for c, clip in enumerate(clips) for f in range(clip.n_frames)]
    if len(every) <= n:
        return every
    rng = np.random.default_rng(seed)
    return sorted(map(tuple, np.array(every)[rng.choice(len(every), n, replace=False)].tolist()))


def by_clip(picks) -> dict[int, list[int]]:
    """(clip, frame) pairs → {clip: its frames}, in the pairs' order (one decode of each clip)."""
    out: dict[int, list[int]] = {}
    for c, f in picks:
        out.setdefault(c, []).append(f)
    return out


@torch.no_grad()
def decoder_inputs(pipe, clips, picks, decoder: str | None, seed: int, progress: bool = True) -> torch.Tensor:
    """What ``pipe``'s decoder makes of the picked frames: each encoded, then decoded from its
    own noise image; (N, 3, r, r) uint8."""
    from tqdm.auto import tqdm

    ae = pipe.autoencoder_for(decoder)
    steps = pipe.default_steps(decoder)
    g = torch.Generator().manual_seed(seed)
    out = []
    bar = tqdm(total=len(picks), desc="decoder frames", unit="frame", disable=not progress)
    for c, frames in by_clip(picks).items():
        lo = clips[c].frames
        for i in range(0, len(frames), 32):
            idx = frames[i : i + 32]
            z = ae.encode(lo[idx])
            noise = torch.randn(len(idx), 3, pipe.resolution, pipe.resolution, generator=g)
            images = ae.decode(z, noise, num_inference_steps=steps, batch_size=len(idx))
            out.append(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
            bar.update(len(idx))
    bar.close()
    return torch.cat(out)


def truth_frames(clips, picks, resolution: int) -> torch.Tensor:
    """The picked frames at ``resolution``, (N, 3, R, R) uint8."""
    out = []
    for c, frames in by_clip(picks).items():
        out.append(torch.from_numpy(clips[c].frames_at(resolution)[frames]).permute(0, 3, 1, 2))
    return torch.cat(out)


def reference_frame(clips, resolution: int) -> torch.Tensor:
    """The training frame whose head pose is nearest the speaker's average, (3, R, R) in [-1, 1]."""
    best = min(((np.abs(clip.pose).sum(1).min(), c, int(np.abs(clip.pose).sum(1).argmin())) for c, clip in enumerate(clips)))
    _, c, f = best
    return to_model(torch.from_numpy(clips[c].frames_at(resolution)[f]).permute(2, 0, 1))


def _cached(path: Path, make) -> dict[str, torch.Tensor]:
    """The tensors saved at ``path``, or ``make()``'s, saved there first."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(path)
    tensors = make()
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    tmp.replace(path)
    return tensors


def load_refiner_weights(model, folder: str | Path) -> None:
    """Load the weights (and reference frame) of the refiner in ``folder`` into ``model``, which
    must be built the same (``--init-from``)."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise TalkerError(f"--init-from {folder}: no safetensors weights there (give a refiner folder)")
    state = load_file(files[0])
    mine = model.state_dict()
    wrong = sorted(k for k in mine.keys() | state.keys() if k not in state or k not in mine or state[k].shape != mine[k].shape)
    if wrong:
        raise TalkerError(f"--init-from {folder}: not a refiner of this run's configuration (differs in {wrong[:3]}); "
                          "give --channels, --num-blocks, --up-channels and --warp-reference as it was trained")
    model.load_state_dict({k: v.to(mine[k].dtype) for k, v in state.items()})


@torch.no_grad()
def evaluate_refiner(model, lo: torch.Tensor, hi: torch.Tensor, device, batch: int = 16) -> dict:
    """PSNR and sharpness ratio of the refined and of bicubic-upscaled decoder frames against the
    truth; the same (``*_aligned``) for the truth degraded (:func:`degrade`, a fixed draw)."""
    model.eval()
    truth = to_model(hi)
    aligned = degrade(truth, hi.shape[-1] // lo.shape[-1], torch.Generator().manual_seed(0))
    s_truth = sharpness(truth)
    scores = {}
    for suffix, inputs in (("", to_model(lo)), ("_aligned", aligned)):
        refined, bicubic = [], []
        for i in range(0, len(inputs), batch):
            x = inputs[i : i + batch].to(device)
            refined.append(model(x).float().cpu())
            bicubic.append(F.interpolate(x.float(), size=hi.shape[-1], mode="bicubic", align_corners=False).clamp(-1, 1).cpu())
        refined, bicubic = torch.cat(refined), torch.cat(bicubic)
        scores.update({f"psnr_refined{suffix}": psnr(refined, truth), f"psnr_bicubic{suffix}": psnr(bicubic, truth),
                       f"sharpness_refined{suffix}": sharpness(refined) / s_truth,
                       f"sharpness_bicubic{suffix}": sharpness(bicubic) / s_truth})
    model.train()
    return scores


def train_refiner(model_dir: str | Path, data_dir: str | Path, run_dir: str | Path, cfg: RefinerConfig,
                  resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a refiner for the speaker at ``model_dir`` on ``data_dir`` (prepared with
    ``--refiner-resolution``); returns its figures."""
    from diffusers.training_utils import EMAModel

    from ..models import Refiner
    from ..pipelines import DAETalkerPipeline

    run = TrainingRun(run_dir, cfg, resume, "train refiner", progress)
    cfg = run.cfg
    index, clips = load_dataset(data_dir)
    hi_res = index.get("refiner_resolution")
    if not hi_res:
        raise TalkerError(f"{data_dir} has no frames at a refiner resolution; prepare it with --refiner-resolution")
    pipe = DAETalkerPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    lo_res = pipe.resolution
    if index["resolution"] != lo_res:
        raise TalkerError(f"{data_dir} is {index['resolution']}px but the speaker's decoder makes {lo_res}px frames")
    if pipe.encoder is None:
        raise TalkerError(f"{model_dir} has no semantic encoder (encoder/) to make the refiner's inputs")
    decoder = cfg.decoder or pipe.default_decoder
    run.path.mkdir(parents=True, exist_ok=True)

    train_clips, held_clips = split_clips(clips, cfg.held_out)
    held_clips = held_clips or train_clips[-1:]

    def make(which, clip_list, n, seed):
        def go():
            picks = pick_frames(clip_list, n, seed)
            return {"lo": decoder_inputs(pipe, clip_list, picks, decoder, seed, progress),
                    "hi": truth_frames(clip_list, picks, hi_res)}
        return _cached(run.path / f"{which}.safetensors", go)

    model = Refiner(in_resolution=lo_res, scale=hi_res // lo_res, channels=cfg.channels, num_blocks=cfg.num_blocks,
                    up_channels=cfg.up_channels, use_reference=cfg.use_reference, warp_reference=cfg.warp_reference)
    if cfg.use_reference:
        model.set_reference(reference_frame(train_clips, hi_res))
    if cfg.init_from and run.checkpoint is None:
        load_refiner_weights(model, cfg.init_from)
    train = make("inputs", train_clips, cfg.frames, cfg.seed)
    held = make("heldout", held_clips, cfg.heldout_frames, cfg.seed + 1)

    ema = EMAModel(model.parameters(), decay=cfg.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if cfg.adv_weight:
        disc = PatchDiscriminator(cfg.disc_channels)
        model, optimizer, disc, d_optimizer = run.start(model, optimizer, ema, disc,
                                                        torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999)))
    else:
        model, optimizer = run.start(model, optimizer, ema)
    unwrapped = run.accelerator.unwrap_model(model)

    scale = hi_res // lo_res
    patch = cfg.patch if 0 < cfg.patch < lo_res else lo_res
    scores = {}
    model.train()
    dev = run.device
    for g in run.steps():  # this step's frames and patches depend only on (seed, step, process)
        idx = torch.randint(len(train["lo"]), (cfg.batch_size,), generator=g)
        y0, x0 = (int(v) for v in torch.randint(0, lo_res - patch + 1, (2,), generator=g))
        lo = to_model(train["lo"][idx, :, y0 : y0 + patch, x0 : x0 + patch])
        hi = to_model(train["hi"][idx, :, y0 * scale : (y0 + patch) * scale, x0 * scale : (x0 + patch) * scale])
        # some inputs are the truth itself degraded: aligned with their target, they teach the
        # detail that the decoder's renderings (which differ from the truth in more than blur) cannot
        aligned = torch.rand(cfg.batch_size, generator=g) < cfg.aligned_share
        if aligned.any():
            lo[aligned] = degrade(hi[aligned], scale, g)
        lo, hi = lo.to(dev), hi.to(dev)
        with run.accelerator.autocast():
            if cfg.warp_reference:
                out, warped = model(lo, region=(y0, x0), return_warped=True)
                loss = refiner_loss(out.float(), hi, cfg.grad_weight) + cfg.warp_weight * (warped - hi).abs().mean()
            else:
                out = model(lo, region=(y0, x0))
                loss = refiner_loss(out.float(), hi, cfg.grad_weight)
        if cfg.adv_weight:
            # the discriminator's step on the truth against this batch's refined patches, then
            # the refiner is scored by it (its weights held)
            with run.accelerator.autocast():
                d_loss = discriminator_loss(disc(hi), disc(out.detach()))
            run.accelerator.backward(d_loss)
            d_optimizer.step()
            d_optimizer.zero_grad(set_to_none=True)
            disc.requires_grad_(False)
            with run.accelerator.autocast():
                loss = loss - cfg.adv_weight * disc(out).float().mean()
            disc.requires_grad_(True)
        run.update(loss, model, optimizer)
        if cfg.adv_weight and run.due(LOG_EVERY):
            run.note(d_loss=float(d_loss))
        if run.is_main and run.due(cfg.eval_every):
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
            scores = evaluate_refiner(unwrapped, held["lo"], held["hi"], dev)
            every = max(1, len(held["lo"]) // 6)
            with torch.no_grad():
                x = to_model(held["lo"][::every][:6]).to(dev)
                unwrapped.eval()
                rows = [to_model(held["hi"][::every][:6]),
                        F.interpolate(x, size=hi_res, mode="bicubic", align_corners=False).cpu(), unwrapped(x).float().cpu()]
                unwrapped.train()
            save_grid(run.path / "samples" / f"step_{run.step:07d}.png", rows)
            ema.restore(unwrapped.parameters())
            run.note(loss=run.loss, loss_avg=run.loss_avg, **scores)
        run.end_step()
    figures = run.figures(train_frames=len(train["lo"]), heldout_frames=len(held["lo"]), resolution=[lo_res, hi_res],
                          decoder=decoder, channels=cfg.channels, num_blocks=cfg.num_blocks, init_from=cfg.init_from,
                          adv_weight=cfg.adv_weight,
                          **scores)

    def export():
        ema.copy_to(unwrapped.parameters())
        unwrapped.save_pretrained(run.path / "refiner")

    return run.finish(figures, export)
