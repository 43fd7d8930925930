"""``talker train s2l``: speech2latent on windows of a few seconds.

Inputs are the audio features of a window, targets the EMA-encoder latents of its frames
(``talker encode``), normalised by their dataset mean/std. The ground-truth head pose is fed to
the pose projector (teacher forcing) while the pose predictor learns it (pose loss); the emotion
intensities of the data, when present, are fed as the emotion vector. Held-out clips are scored
with the *predicted* pose, as at inference: latent MSE (normalised) and pose error in degrees.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import FPS, log_mel, wav2vec2_features
from ..errors import TalkerError
from .dae import _latest_checkpoint, load_checkpoint, make_accelerator, resumed_config, save_checkpoint
from .data import load_dataset, split_clips


@dataclass
class S2LConfig:
    audio_frontend: str = "mel"
    wav2vec2: str | None = None  # folder or Hub id of a Wav2Vec2Model (audio_frontend="wav2vec2")
    window_seconds: float = 4.0
    batch_size: int = 8
    lr: float = 3e-4
    max_steps: int = 5000
    checkpoint_every: int = 500
    eval_every: int = 250
    pose_weight: float = 0.5
    hidden_size: int = 256
    num_heads: int = 4
    ffn_size: int = 1024
    conv_kernel_size: int = 15
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dropout: float = 0.1
    held_out: float = 0.1
    seed: int = 0
    mixed_precision: str = "auto"


def load_audio_encoder(name: str):
    """(Wav2Vec2Model, Wav2Vec2FeatureExtractor) from a folder or Hub id, frozen, float32."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    try:
        model = Wav2Vec2Model.from_pretrained(name, dtype=torch.float32).eval()
    except OSError as e:
        raise TalkerError(f"cannot load the wav2vec2 model {name!r}: {e}") from None
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(name)
    except OSError:
        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    model.requires_grad_(False)
    return model, fe


def clip_features(clip, cfg: S2LConfig, audio_encoder=None, feature_extractor=None) -> torch.Tensor:
    audio = clip.audio
    if cfg.audio_frontend == "mel":
        return log_mel(audio, clip.n_frames)
    return wav2vec2_features(audio, clip.n_frames, audio_encoder, feature_extractor, feature_rate=50)


def build_s2l(cfg: S2LConfig, feature_dim: int, latent_dim: int):
    from ..models import Speech2Latent

    return Speech2Latent(audio_frontend=cfg.audio_frontend, feature_dim=feature_dim,
                         feature_rate=100 if cfg.audio_frontend == "mel" else 50, hidden_size=cfg.hidden_size,
                         num_heads=cfg.num_heads, ffn_size=cfg.ffn_size, conv_kernel_size=cfg.conv_kernel_size,
                         num_encoder_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
                         dropout=cfg.dropout, latent_dim=latent_dim)


@torch.no_grad()
def evaluate(model, items, device) -> dict:
    """Held-out scores with the predicted pose: normalised latent MSE, pose MAE in degrees."""
    if not items:
        return {}
    model.eval()
    lat_err, pose_err, n = 0.0, np.zeros(3), 0
    for feats, lat, pose, emo in items:
        out = model(feats[None].to(device), emotion=None if emo is None else emo[None].to(device))
        target = model.normalize_latents(lat.to(device))
        lat_err += torch.mean((out.latents[0].float() - target) ** 2, dim=1).sum().item()
        pose_err += (out.pose[0].float().cpu() - pose).abs().sum(0).numpy()
        n += len(lat)
    model.train()
    mae = pose_err / n
    return {"heldout_latent_mse": lat_err / n, "heldout_pose_mae_deg": mae.round(3).tolist()}


def train_s2l(data_dir: str | Path, dae_run: str | Path, run_dir: str | Path, cfg: S2LConfig,
              resume: bool = False, progress: bool = True) -> dict:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    run = Path(run_dir)
    ckpt = _latest_checkpoint(run) if resume else None
    if ckpt is not None:
        cfg = resumed_config(run, cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    set_seed(cfg.seed)
    _, clips = load_dataset(data_dir)
    stats_path = Path(data_dir) / "latents.json"
    if not stats_path.is_file():
        raise TalkerError(f"{data_dir} has no latents; run `talker encode --data {data_dir} --dae {dae_run}` first")
    stats = json.loads(stats_path.read_text())
    audio_encoder = feature_extractor = None
    if cfg.audio_frontend == "wav2vec2":
        if not cfg.wav2vec2:
            raise TalkerError("--audio-frontend wav2vec2 needs --wav2vec2 FOLDER_OR_REPO_ID")
        audio_encoder, feature_extractor = load_audio_encoder(cfg.wav2vec2)
    elif cfg.audio_frontend != "mel":
        raise TalkerError(f"--audio-frontend must be mel or wav2vec2; got {cfg.audio_frontend!r}")

    def item(clip):
        feats = clip_features(clip, cfg, audio_encoder, feature_extractor)
        emo = None if clip.emotion is None else torch.from_numpy(clip.emotion).float()
        return feats, torch.from_numpy(clip.latents()).float(), torch.from_numpy(clip.pose).float(), emo

    train_clips, held_clips = split_clips(clips, cfg.held_out)
    train_items = [item(c) for c in tqdm(train_clips, desc="audio features", disable=not progress)]
    held_items = [item(c) for c in held_clips]
    ratio = train_items[0][0].shape[0] // train_items[0][1].shape[0]
    all_feats = torch.cat([f for f, *_ in train_items])
    all_pose = torch.cat([p for _, _, p, _ in train_items])

    model = build_s2l(cfg, all_feats.shape[1], stats["z_dim"])
    model.set_statistics(feature_mean=all_feats.mean(0), feature_std=all_feats.std(0),
                         latent_mean=stats["mean"], latent_std=stats["std"],
                         pose_mean=all_pose.mean(0), pose_std=all_pose.std(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step = 0
    if ckpt is not None:
        step = load_checkpoint(accelerator, ckpt)
    elif accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")

    window = int(round(cfg.window_seconds * FPS))
    lengths = np.array([len(lat) for _, lat, _, _ in train_items], np.float64)
    has_emotion = train_items[0][3] is not None
    log = run / "train_log.jsonl"
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train s2l", disable=not (progress and accelerator.is_main_process))
    train_time, steps_timed, loss_avg, scores = 0.0, 0, None, {}
    model.train()
    while step < cfg.max_steps:
        tic = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        feats, lats, poses, emos, masks = [], [], [], [], []
        for k in rng.choice(len(train_items), cfg.batch_size, p=lengths / lengths.sum()):
            f, lat, pose, emo = train_items[k]
            n = len(lat)
            start = int(rng.integers(0, max(1, n - window + 1)))
            w = min(window, n)
            pad = window - w
            feats.append(torch.nn.functional.pad(f[start * ratio : (start + w) * ratio], (0, 0, 0, pad * ratio)))
            lats.append(torch.nn.functional.pad(lat[start : start + w], (0, 0, 0, pad)))
            poses.append(torch.nn.functional.pad(pose[start : start + w], (0, 0, 0, pad)))
            if has_emotion:
                emos.append(torch.nn.functional.pad(emo[start : start + w], (0, 0, 0, pad)))
            masks.append(torch.arange(window) < w)
        dev = accelerator.device
        feats, lats, poses, masks = (torch.stack(x).to(dev) for x in (feats, lats, poses, masks))
        emos = torch.stack(emos).to(dev) if has_emotion else None
        with accelerator.autocast():
            out = model(feats, pose=poses, emotion=emos, mask=masks)
            m = masks[..., None].float()
            lat_loss = (((out.latents.float() - unwrapped.normalize_latents(lats)) ** 2) * m).sum() / (m.sum() * lats.shape[-1])
            pose_loss = (((out.predicted_pose.float() - unwrapped.normalize_pose(poses)) ** 2) * m).sum() / (m.sum() * 3)
            loss = lat_loss + cfg.pose_weight * pose_loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_timed += 1
        train_time += time.perf_counter() - tic
        value = accelerator.gather(loss.detach()[None]).mean().item()
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        bar.update()
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if accelerator.is_main_process and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            scores = evaluate(unwrapped, held_items, dev)
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, "loss": value, "latent_loss": lat_loss.item(),
                                    "pose_loss": pose_loss.item(), **scores}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save_checkpoint(accelerator, run, step)
    bar.close()
    if not scores and accelerator.is_main_process:
        scores = evaluate(unwrapped, held_items, accelerator.device)
    figures = {"steps": step, "loss_avg": loss_avg, "steps_per_s": steps_timed / train_time if train_time else math.nan,
               "train_clips": len(train_items), "heldout_clips": len(held_items), **scores}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped.save_pretrained(run / "speech_to_latent")
        (run / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    accelerator.end_training()
    return figures
