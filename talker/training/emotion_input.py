"""Emotion as an input of the speaker's decoders (``talker add-emotion --method input``).

Where the signal is lost: the diffusion autoencoder's semantic encoder keeps little of an
expression. Through the bundled speaker's encoder and decoder, a held-out clip's truth frames
with an emotion at 1.0 come back with a small part of the truth's change of the face
(``bench/emotion.py``'s ``reconstruction_ratio``), so no z_sem that speech2latent predicts, and
no offset along a direction of z_sem, can show more than that without leaving the latents the
decoder was trained on (the offsets learned through the decoder, :mod:`.emotion`, reached the
truth's change only for some features, with the lips left apart and some signs wrong).

So the decoders take the intensities themselves (:class:`~talker.models.unet.DAEDecoderUNet`'s
``emotion_dim``): zero-initialised AdaGN layers, trained here alone on the speaker's own frames
with their emotion labels, everything else frozen. Each training frame x0 is noised and rendered
from its own encoder latent z (what speech2latent learned to predict) and its intensities e:

- the distilled decoder (``prediction_type="sample"``): x_t on the DDIM line from fresh noise at
  the timesteps that 1–8 step decoding visits (half) or any (half), as ``talker train distill``
  trains it (:class:`~.configs.DistillConfig`'s defaults), loss |decoder(x_t, t, z, e) − x0|²;
- the DDIM decoder: the DAE's own noise loss with Min-SNR weights;

both weighted towards where the speaker's face moves (:func:`~.distill.motion_weights`). Neutral
(all zeros) renders exactly what the speaker rendered before, mixes are the embedding of the
summed intensities, and intensities in between are whatever the labelled frames taught (the
training clips hold single emotions from 0.3 to 1.0 and ramps between two).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..defaults import EMOTION_INPUT
from ..errors import TalkerError
from ..models import DAEDecoderUNet
from .data import load_dataset, split_clips
from .configs import DistillConfig
from .dae import loss_weights
from .distill import frames_to_x0, line_point, motion_weights, timestep_grid

HELD_OUT_FRAMES = 128


def labelled_frames(clips) -> dict[str, torch.Tensor | np.ndarray]:
    """Every frame of ``clips`` that has an emotion label: "frames" (F, R, R, 3) uint8, "z_sem"
    (F, D) its encoder latent (``talker encode``), "emotion" (F, E)."""
    frames, latents, emotion = [], [], []
    for c in clips:
        z = c.latents()
        n = min(len(z), c.n_frames, len(c.emotion))
        frames.append(c.frames[:n])
        latents.append(z[:n])
        emotion.append(c.emotion[:n])
    return {"frames": np.concatenate(frames), "z_sem": torch.from_numpy(np.concatenate(latents)).float(),
            "emotion": torch.from_numpy(np.concatenate(emotion)).float()}


def with_emotion_input(unet: DAEDecoderUNet, n_emotions: int) -> DAEDecoderUNet:
    """A float32 copy of ``unet`` that takes ``n_emotions`` intensities (its emotion layers
    zero-initialised, or kept where it already has them), frozen but for those layers."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    new = DAEDecoderUNet(**{**config, "emotion_dim": n_emotions})
    missing, unexpected = new.load_state_dict({k: v.float() for k, v in unet.state_dict().items()}, strict=False)
    if unexpected or any("emotion" not in k for k in missing):
        raise TalkerError(f"the decoder's weights do not fit its configuration: {sorted(missing + unexpected)[:4]}")
    new.eval().requires_grad_(False)  # eval: no dropout, as the decoder renders
    for name, p in new.named_parameters():
        p.requires_grad_("emotion" in name)
    return new


class DecoderLoss:
    """The training loss of one decoder with its emotion input, for frames x0 (B, 3, R, R) in
    [-1, 1], latents z and intensities e; weighted by ``weights`` (R, R)."""

    def __init__(self, unet: DAEDecoderUNet, scheduler_config, weights: torch.Tensor, snr_gamma: float = 5.0):
        from diffusers import DDIMScheduler

        self.unet, self.weights, self.snr_gamma = unet, weights, snr_gamma
        self.scheduler = DDIMScheduler.from_config(scheduler_config)
        self.sample = unet.config.prediction_type == "sample"
        if self.sample:  # as the distilled decoder was trained: where its x_T sits, the timesteps it visits
            line = DistillConfig()
            self.scheduler.set_timesteps(line.teacher_steps)
            self.t_start = int(self.scheduler.timesteps[0])
            self.grid, self.grid_share = timestep_grid(scheduler_config, tuple(line.grid_steps)), line.grid_share

    def __call__(self, x0, z, e, g: torch.Generator) -> torch.Tensor:
        b, n_train = len(x0), self.scheduler.config.num_train_timesteps
        noise = torch.randn(x0.shape, generator=g)
        if self.sample:
            on_grid = torch.rand(b, generator=g) < self.grid_share
            t = torch.where(on_grid, self.grid[torch.randint(len(self.grid), (b,), generator=g)],
                            torch.randint(0, n_train, (b,), generator=g))
            pred = self.unet(line_point(x0, noise, t, self.scheduler, self.t_start), t, z, emotion=e).sample
            return ((pred - x0).pow(2).mean(1) * self.weights).mean()
        t = torch.randint(0, n_train, (b,), generator=g)
        pred = self.unet(self.scheduler.add_noise(x0, noise, t), t, z, emotion=e).sample
        per_image = ((pred - noise).pow(2).mean(1) * self.weights).mean((1, 2))
        return (per_image * loss_weights(self.scheduler.alphas_cumprod, t, self.snr_gamma)).mean()


@torch.no_grad()
def rendering_error(unet, scheduler, held: dict, weights: torch.Tensor, steps: int, seed: int,
                    with_emotion: bool) -> float:
    """Weighted squared error of ``held``'s frames rendered from their latents (and intensities,
    if ``with_emotion``) in ``steps`` steps, each from its own fixed noise."""
    from ..pipelines.ddim import ddim_decode

    x0 = frames_to_x0(held["frames"])
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    images = ddim_decode(unet, scheduler, held["z_sem"], x_T, steps, 32, precision="float32",
                         emotion=held["emotion"] if with_emotion else None)
    return round(float(((images.float() - x0).pow(2).mean(1) * weights).mean()), 5)


def train_emotion_input(pipe, data_dir: str | Path, decoders: tuple[str, ...] | None = None,
                        steps: int = EMOTION_INPUT["steps"], batch_size: int = EMOTION_INPUT["batch_size"],
                        lr: float = EMOTION_INPUT["lr"], seed: int = EMOTION_INPUT["seed"],
                        motion_weight: float = EMOTION_INPUT["motion_weight"],
                        progress: bool = True) -> tuple[dict[str, DAEDecoderUNet], dict]:
    """Train the emotion input of each of ``pipe``'s ``decoders`` ("distilled", "ddim", "light"; None:
    the distilled and DDIM ones the speaker has, as a light decoder learns it from its teacher) on
    the training clips of ``data_dir`` (a prepared, encoded dataset with per-frame emotion labels,
    ``talker encode``'s latents from this speaker's encoder). Returns the
    new decoders by name and a record: the held-out clips' weighted error at each decoder's
    default steps with the emotion input and without it. A decoder that already takes the emotion
    continues from its emotion layers."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1 or lr <= 0 or motion_weight < 0:
        raise TalkerError(f"steps and batch size must be at least 1, lr positive and the motion weight at least 0; "
                          f"got {steps}, {batch_size}, {lr}, {motion_weight}")
    names = pipe.emotion_names
    if not names:
        raise TalkerError("this speaker has no emotion control (its speech2latent has no emotion names)")
    decoders = decoders or (("distilled",) if pipe.distilled_unet is not None else ()) + ("ddim",)
    for decoder in decoders:  # an unknown or missing decoder fails here, before the frames are read
        pipe.decoder_for(decoder)
    _, clips = load_dataset(data_dir)
    labelled = [c for c in clips if c.emotion is not None]
    train_clips, held_clips = split_clips(labelled)
    if not train_clips:
        raise TalkerError(f"{data_dir}: no clip has emotion labels (emotion.npy, from `talker synth` truth)")
    train = labelled_frames(train_clips)
    if train["emotion"].shape[1] < len(names):
        raise TalkerError(f"{data_dir}: the clips are labelled with {train['emotion'].shape[1]} emotions; "
                          f"the speaker has {len(names)} ({', '.join(names)})")
    missing = [n for k, n in enumerate(names) if not (train["emotion"][:, k] > 0).any()]
    if missing:
        raise TalkerError(f"{data_dir}: no training frame shows {', '.join(missing)}")
    train["emotion"] = train["emotion"][:, : len(names)]
    res = train["frames"].shape[1]
    weights = motion_weights(train["frames"][:: max(1, len(train["frames"]) // 4096)], motion_weight)
    held = None
    if held_clips:
        h = labelled_frames(held_clips)
        pick = np.linspace(0, len(h["frames"]) - 1, min(HELD_OUT_FRAMES, len(h["frames"]))).round().astype(int)
        held = {"frames": h["frames"][pick], "z_sem": h["z_sem"][pick], "emotion": h["emotion"][pick, : len(names)]}
    record = {"method": "input", "data": str(data_dir), "clips": len(train_clips), "frames": int(len(train["frames"])),
              "decoders": {}}
    trained = {}
    for decoder in decoders:
        unet, scheduler = pipe.decoder_for(decoder)
        if unet.config.sample_size != res:
            raise TalkerError(f"{data_dir}: frames are {res}² but the speaker's {decoder} decoder renders "
                              f"{unet.config.sample_size}²")
        if train["z_sem"].shape[1] != unet.config.z_dim:
            raise TalkerError(f"{data_dir}: the latents are {train['z_sem'].shape[1]}-d but the decoder takes "
                              f"{unet.config.z_dim}-d; run `talker encode` with this speaker")
        new = with_emotion_input(unet, len(names)).cpu()
        loss_of = DecoderLoss(new, pipe.scheduler.config, weights)
        opt = torch.optim.Adam([p for p in new.parameters() if p.requires_grad], lr=lr)
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in tqdm(range(steps), desc=f"emotion input ({decoder} decoder)", disable=not progress):
            idx = torch.randint(len(train["frames"]), (batch_size,), generator=g)
            loss = loss_of(frames_to_x0(train["frames"][idx.numpy()]), train["z_sem"][idx], train["emotion"][idx], g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        new.requires_grad_(False)
        row = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "motion_weight": motion_weight,
               "training_loss_first_last": [round(float(np.mean(losses[:20])), 5),
                                            round(float(np.mean(losses[-20:])), 5)]}
        if held is not None:
            n_steps = pipe.default_steps(decoder)
            row["heldout_error"] = {
                "with_emotion_input": rendering_error(new, scheduler, held, weights, n_steps, seed + 1, True),
                "without": rendering_error(new, scheduler, held, weights, n_steps, seed + 1, False),
                "frames": len(held["frames"]), "steps": n_steps}
        record["decoders"][decoder] = row
        trained[decoder] = new
    return trained, record


# where each decoder lives in a speaker folder
COMPONENTS = {"distilled": "distilled_unet", "ddim": "unet", "light": "light_unet"}


def store_emotion_input(pipe, folder: str | Path, trained: dict[str, DAEDecoderUNet], record: dict) -> None:
    """Write ``trained`` decoders (by decoder name) into the speaker folder that ``pipe`` was loaded
    from, each in its stored dtype; ``record`` goes to speaker.json and the model card."""
    from ..hub import read_speaker, stored_dtype, write_speaker
    from .export import write_model_card

    folder = Path(folder)
    for decoder, unet in trained.items():
        component = folder / COMPONENTS[decoder]
        torch.nn.Module.to(unet, stored_dtype(component))
        unet.save_pretrained(component)
    speaker = read_speaker(folder)
    speaker["emotion"] = record
    write_speaker(folder, speaker)
    write_model_card(folder, speaker=speaker)
