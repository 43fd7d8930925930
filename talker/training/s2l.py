"""``talker train s2l``: speech2latent on windows of a few seconds.

Inputs are the audio features of a window, targets the EMA-encoder latents of its frames
(``talker encode``), normalised by their dataset mean/std. The ground-truth head pose is fed to
the pose projector (teacher forcing) while the pose predictor learns it (pose loss); the emotion
intensities of the data, when present, are fed as the emotion vector. Held-out clips are scored
with the *predicted* pose, as at inference: latent MSE (normalised) and pose error in degrees,
on their clean audio, on a fixed noisy, reverberant copy and on their longest pause filled with
noise (and with babble, for a run that trains on it). What is scored and kept is the moving average
of the weights (``ema_decay``; 0: the weights as trained): the trained weights' held-out score
swung by more than a factor of two from one evaluation to the next on the bundled speaker's live
network. The step with the best mean over these sets is kept (``RUN/speech_to_latent``).

With ``augment`` (the default), every training window's audio goes through ``augment.py``'s
chain (noise that fills the pauses, rooms, phone lines, codecs, gain, pitch and speed; the targets
follow a speed change), drawn from the run's seed and the step, so a resumed run repeats it; a
share of the windows (``pause_windows``) is a pause with noise alone (babble in ``pause_babble``
of them), whose target is a shut mouth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..audio import FPS, SAMPLES_PER_FRAME
from ..errors import TalkerError
from ..frontends import FRONTENDS, frontend_named, load_audio_encoder, speech_features
from .augment import Augmenter, pause_runs, pause_window, speech_power, speed_perturb
from .configs import S2LConfig
from .data import load_dataset, split_clips
from .runs import TrainingRun, ema_weights, moving_average


def stretch(x: torch.Tensor, start: int, count: int, factor: float) -> torch.Tensor:
    """Rows of (N, D) ``x`` at times start + k·factor (k < count), linearly interpolated."""
    t = start + torch.arange(count, dtype=torch.float64) * factor
    t = t.clamp(max=len(x) - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=len(x) - 1)
    w = (t - lo).float()[:, None]
    return x[lo] * (1 - w) + x[hi] * w


def build_s2l(cfg: S2LConfig, feature_dim: int, latent_dim: int, mouth_readout: bool = False):
    from ..models import Speech2Latent

    return Speech2Latent(audio_frontend=cfg.audio_frontend, feature_dim=feature_dim,
                         feature_rate=FRONTENDS[cfg.audio_frontend].feature_rate, hidden_size=cfg.hidden_size,
                         num_heads=cfg.num_heads, ffn_size=cfg.ffn_size, conv_kernel_size=cfg.conv_kernel_size,
                         num_encoder_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
                         dropout=cfg.dropout, latent_dim=latent_dim, feature_normalization=cfg.feature_normalization, mel_floor=cfg.mel_floor,
                         voice_activity=cfg.voice_activity, mouth_readout=mouth_readout,
                         chunk_frames=cfg.chunk_frames)


class MouthReadout:
    """A linear read-out of mouth opening from ``z_sem`` (ridge regression on the training clips'
    latents and their synthetic truth ``mouth_open``): lets held-out scores measure the mouth,
    which speech decides, apart from head motion and blinks, which it does not. ``direction`` is
    the regression the other way (z_sem on mouth opening): where the latents move as the mouth
    opens, the axis along which the pipeline shuts mouths where nobody speaks."""

    def __init__(self, latents: np.ndarray, mouth_open: np.ndarray, ridge: float = 10.0):
        self.mean = latents.mean(0)
        x = latents - self.mean
        self.bias = float(mouth_open.mean())
        m = mouth_open - self.bias
        self.weight = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ m)
        self.direction = x.T @ m / max(float(m @ m), 1e-12)  # how z_sem moves per unit of opening
        self.variance = max(float(np.var(self(latents))), 1e-8)  # of the read-out on the training latents

    def __call__(self, z_sem: np.ndarray) -> np.ndarray:
        return (z_sem - self.mean) @ self.weight + self.bias


def clip_mouth_open(clip) -> np.ndarray | None:
    """A prepared clip's synthetic truth ``mouth_open`` (N,), or None for real video."""
    path = clip.path / "truth.npz"
    if not path.is_file():
        return None
    with np.load(path) as truth:
        return truth["mouth_open"][: clip.n_frames].astype(np.float32) if "mouth_open" in truth.files else None


@torch.no_grad()
def evaluate(model, items, device, readout: MouthReadout | None = None, window: int | None = None) -> dict:
    """Held-out scores with the predicted pose: normalised latent MSE (also given the true pose),
    pose MAE in degrees, and with a mouth read-out and truth, the mouth-opening MSE and, for a
    network with voice activity, the mouth gain: std of the read-out openings of the encoded
    latents ÷ that of the predicted ones as the pipeline shapes them (shut where nobody speaks)
    at gain 1, on ``window``-frame windows and with no emotion given, as the pipeline runs by
    default (``window`` None: whole clips)."""
    if not items:
        return {}
    model.eval()
    lat_err, lat_err_pose, mouth_err, pose_err, n = 0.0, 0.0, 0.0, np.zeros(3), 0
    opening_pred, opening_true = [], []  # read-out openings of the predicted and the encoded latents
    for feats, lat, pose, emo, mouth in items:  # features computed beforehand (clean or augmented audio)
        e = None if emo is None else emo[None].to(device)
        out = model(feats[None].to(device), emotion=e)
        target = model.normalize_latents(lat.to(device))
        lat_err += torch.mean((out.latents[0].float() - target) ** 2, dim=1).sum().item()
        given = model(feats[None].to(device), pose=pose[None].to(device), emotion=e)
        lat_err_pose += torch.mean((given.latents[0].float() - target) ** 2, dim=1).sum().item()
        if readout is not None and mouth is not None:
            mouth_err += float(np.sum((readout(out.z_sem[0].float().cpu().numpy()) - mouth) ** 2))
            if model.config.mouth_readout and model.config.voice_activity:  # as the pipeline shapes it, gain 1
                gain = model.config.mouth_gain
                model.register_to_config(mouth_gain=1.0)
                w, r = window or len(lat), model.frames_per_feature  # on windows of the pipeline's length
                shaped = torch.cat([model(feats[None, s * r : (s + w) * r].to(device), shape_mouth=True).z_sem[0]
                                    for s in range(0, len(lat), w)])
                model.register_to_config(mouth_gain=gain)
                opening_pred.append(readout(shaped.float().cpu().numpy()))
                opening_true.append(readout(lat.numpy()))
        pose_err += (out.pose[0].float().cpu() - pose).abs().sum(0).numpy()
        n += len(lat)
    model.train()
    mae = pose_err / n
    scores = {"heldout_latent_mse": lat_err / n, "heldout_latent_mse_given_pose": lat_err_pose / n,
              "heldout_pose_mae_deg": mae.round(3).tolist()}
    if readout is not None and all(it[4] is not None for it in items):
        scores["heldout_mouth_mse"] = mouth_err / n
    if opening_pred:  # the amplitude the shaped openings lack (a regression shrinks toward the mean)
        spread = float(np.std(np.concatenate(opening_pred)))
        scores["heldout_mouth_gain"] = float(np.std(np.concatenate(opening_true)) / max(spread, 1e-8))
    return scores


def evaluate_sets(model, sets: dict[str, list], device, readout: MouthReadout | None = None,
                  window: int | None = None) -> dict:
    """``evaluate`` on each held-out set ("clean", "augmented", "pauses", and "babble" for a run
    that trains on it); ``heldout_score`` (what
    picks the kept step) is the mean over the sets of the mouth-opening MSE where the data has
    synthetic truth, else of the latent MSE given the true pose: head motion is not predictable
    from speech and would drown what speech does decide, the mouth. Keys of the clean set keep
    their names."""
    out, mses = {}, []
    for name, items in sets.items():
        scores = evaluate(model, items, device, readout, window)
        if not scores:
            continue
        mses.append(scores.get("heldout_mouth_mse", scores["heldout_latent_mse_given_pose"]))
        out.update(scores if name == "clean" else {k.replace("heldout_", f"heldout_{name}_"): v for k, v in scores.items()})
    if mses:
        out["heldout_score"] = float(np.mean(mses))
    return out


def train_s2l(data_dir: str | Path, dae_run: str | Path, run_dir: str | Path, cfg: S2LConfig,
              resume: bool = False, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    run = TrainingRun(run_dir, cfg, resume, "train s2l", progress)
    cfg = run.cfg
    _, clips = load_dataset(data_dir)
    stats_path = Path(data_dir) / "latents.json"
    if not stats_path.is_file():
        raise TalkerError(f"{data_dir} has no latents; run `talker encode --data {data_dir} --dae {dae_run}` first")
    stats = json.loads(stats_path.read_text())
    audio_encoder = feature_extractor = None
    if frontend_named(cfg.audio_frontend).needs_encoder:
        if not cfg.wav2vec2:
            raise TalkerError(f"--audio-frontend {cfg.audio_frontend} needs --wav2vec2 FOLDER_OR_REPO_ID")
        audio_encoder, feature_extractor = load_audio_encoder(cfg.wav2vec2)

    def item(clip):
        emo = None if clip.emotion is None else torch.from_numpy(clip.emotion).float()
        return clip.audio, torch.from_numpy(clip.latents()).float(), torch.from_numpy(clip.pose).float(), emo

    def featurize(items, mouths, augmenter=None, seed=0):
        out = []
        for k, ((audio, lat, pose, emo), mouth) in enumerate(zip(items, mouths, strict=True)):
            if augmenter is not None:
                audio = augmenter(audio, np.random.default_rng([seed, k]))
            out.append((speech_features(audio, len(lat), cfg, audio_encoder, feature_extractor), lat, pose, emo, mouth))
        return out

    def pause_items(items, mouths, seed=0, noise_kind=None):
        """Each held-out clip's longest pause as a whole window, with noise (the chain's draw, or
        ``noise_kind``): the lips must stay shut."""
        out = []
        for k, ((audio, lat, pose, emo), mouth) in enumerate(zip(items, mouths, strict=True)):
            runs = pause_runs(audio, SAMPLES_PER_FRAME)
            if not runs or augmenter is None:
                continue
            idx, a = pause_window(audio, max(runs, key=lambda r: r[1] - r[0]), window)
            a = augmenter(a, np.random.default_rng([seed, k]), reference_power=speech_power(audio), noise_kind=noise_kind)
            t = torch.from_numpy(idx)
            out.append((speech_features(a, window, cfg, audio_encoder, feature_extractor), lat[t], pose[t],
                        None if emo is None else emo[t], None if mouth is None else mouth[idx]))
        return out

    train_clips, held_clips = split_clips(clips, cfg.held_out)
    train_items = [item(c) for c in tqdm(train_clips, desc="reading clips", disable=not progress)]
    held_raw = [item(c) for c in held_clips]
    held_mouths = [clip_mouth_open(c) for c in held_clips]
    train_mouths = [clip_mouth_open(c) for c in train_clips]
    readout = None
    if all(m is not None for m in train_mouths + held_mouths):
        readout = MouthReadout(np.concatenate([lat.numpy() for _, lat, _, _ in train_items]), np.concatenate(train_mouths))
    augmenter = Augmenter(babble_sources=[a for a, *_ in train_items]) if cfg.augment else None
    window = int(round(cfg.window_seconds * FPS))
    # held-out scores: clean audio, one fixed noisy/reverberant/band-limited copy of each clip, and
    # each clip's longest pause as a whole window of noise (and of babble, with pause_babble)
    held_sets = {"clean": featurize(held_raw, held_mouths)}
    if augmenter is not None:
        held_sets["augmented"] = featurize(held_raw, held_mouths, augmenter, seed=10_000 + cfg.seed)
        held_sets["pauses"] = pause_items(held_raw, held_mouths, seed=20_000 + cfg.seed)
        if augmenter.babble_sources and cfg.pause_babble > 0:  # what the run learns, it is scored on
            held_sets["babble"] = pause_items(held_raw, held_mouths, seed=30_000 + cfg.seed, noise_kind="babble")
    clean_feats = [speech_features(a, len(lat), cfg, audio_encoder, feature_extractor) for a, lat, _, _ in train_items]
    ratio = clean_feats[0].shape[0] // len(train_items[0][1])
    all_pose = torch.cat([p for _, _, p, _ in train_items])

    model = build_s2l(cfg, clean_feats[0].shape[1] - cfg.voice_activity, stats["z_dim"], mouth_readout=readout is not None)
    with torch.no_grad():  # statistics of the features after the per-window normalisation
        all_feats = torch.cat([model.normalize_window(model.split_features(f[None])[0])[0] for f in clean_feats])
    model.set_statistics(feature_mean=all_feats.mean(0), feature_std=all_feats.std(0),
                         latent_mean=stats["mean"], latent_std=stats["std"],
                         pose_mean=all_pose.mean(0), pose_std=all_pose.std(0))
    del clean_feats, all_feats
    if cfg.init_from and run.checkpoint is None:
        from safetensors.torch import load_file

        path = Path(cfg.init_from)
        files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
        if not files:
            raise TalkerError(f"--init-from {path}: no safetensors weights there")
        missing, unexpected = model.load_state_dict(load_file(files[0]), strict=False)
        # a new voice input starts as a no-op; the mouth read-out is set from this data below
        missing = [k for k in missing if not k.startswith(("voice_proj.", "mouth_"))]
        unexpected = [k for k in unexpected if not k.startswith("mouth_")]
        if missing or unexpected:
            raise TalkerError(f"--init-from {files[0]}: not this network's weights (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if readout is not None:  # saved with the weights: the pipeline shuts mouths where nobody speaks
        model.set_mouth_readout(readout.mean, readout.weight, readout.bias, readout.direction)
    # after --init-from: the average starts from the weights the run starts from
    ema = moving_average(model.parameters(), cfg.ema_decay)
    model, optimizer = run.start(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01), ema)
    unwrapped = run.accelerator.unwrap_model(model)
    best_path = run.path / "best.json"
    best = json.loads(best_path.read_text()) if run.checkpoint is not None and best_path.is_file() else None

    spf = SAMPLES_PER_FRAME
    pauses = [pause_runs(a, spf) for a, *_ in train_items]
    powers = [speech_power(a) for a, *_ in train_items]
    lengths = np.array([len(lat) for _, lat, _, _ in train_items], np.float64)
    has_emotion = train_items[0][3] is not None
    scores = {}
    model.train()
    for _ in run.steps():
        rng = run.rng()
        feats, lats, poses, emos, masks = [], [], [], [], []
        for k in rng.choice(len(train_items), cfg.batch_size, p=lengths / lengths.sum()):
            audio, lat, pose, emo = train_items[k]
            n = len(lat)
            if augmenter is not None and pauses[k] and rng.random() < cfg.pause_windows:
                # a whole window of one of the clip's pauses (frames back and forth), noise added by
                # the chain at the clip's speech level: silence and noise alone must keep lips shut;
                # babble (voices that no one speaks to the camera) in ``pause_babble`` of them
                a0, b0 = pauses[k][int(rng.integers(len(pauses[k])))]
                idx, a = pause_window(audio, (a0, b0), window, int(rng.integers(0, 2 * (b0 - a0))))
                idx = torch.from_numpy(idx)
                babble = cfg.pause_babble > 0 and augmenter.babble_sources and rng.random() < cfg.pause_babble
                a = augmenter(a, rng, reference_power=powers[k], noise_kind="babble" if babble else None)
                feats.append(speech_features(a, window, cfg, audio_encoder, feature_extractor))
                lats.append(lat[idx])
                poses.append(pose[idx])
                if has_emotion:
                    emos.append(emo[idx])
                masks.append(torch.ones(window, dtype=torch.bool))
                continue
            # a speed change by `factor` squeezes window × factor frames of the clip into the window
            factor = augmenter.speed_factor(rng) if augmenter is not None else 1.0
            span = min(n, int(np.ceil(window * factor)))
            start = int(rng.integers(0, max(1, n - span + 1)))
            w = min(window, int((n - start) / factor))
            a = audio[start * spf : start * spf + int(round(w * factor * spf))]
            if factor != 1.0:
                a = speed_perturb(a, factor)
            a = np.pad(a, (0, max(0, w * spf - len(a))))[: w * spf]
            if augmenter is not None:
                a = augmenter(a, rng)
            f = speech_features(a, w, cfg, audio_encoder, feature_extractor)
            pad = window - w
            feats.append(torch.nn.functional.pad(f, (0, 0, 0, pad * ratio)))
            lats.append(torch.nn.functional.pad(stretch(lat, start, w, factor), (0, 0, 0, pad)))
            poses.append(torch.nn.functional.pad(stretch(pose, start, w, factor), (0, 0, 0, pad)))
            if has_emotion:
                emos.append(torch.nn.functional.pad(stretch(emo, start, w, factor), (0, 0, 0, pad)))
            masks.append(torch.arange(window) < w)
        dev = run.device
        feats, lats, poses, masks = (torch.stack(x).to(dev) for x in (feats, lats, poses, masks))
        emos = torch.stack(emos).to(dev) if has_emotion else None
        with run.accelerator.autocast():
            out = model(feats, pose=poses, emotion=emos, mask=masks)
            m = masks[..., None].float()
            lat_loss = (((out.latents.float() - unwrapped.normalize_latents(lats)) ** 2) * m).sum() / (m.sum() * lats.shape[-1])
            pose_loss = (((out.predicted_pose.float() - unwrapped.normalize_pose(poses)) ** 2) * m).sum() / (m.sum() * 3)
            loss = lat_loss + cfg.pose_weight * pose_loss
            mouth_loss = torch.zeros(())
            if readout is not None and cfg.mouth_weight > 0:  # the mouth is a few of z_sem's dimensions: weigh it
                opening = unwrapped.mouth_open(out.z_sem.float()) - unwrapped.mouth_open(lats)
                mouth_loss = (opening**2 * masks).sum() / (masks.sum() * readout.variance)
                loss = loss + cfg.mouth_weight * mouth_loss
        run.update(loss, model, optimizer)
        if run.is_main and run.due(cfg.eval_every):
            with ema_weights(ema, unwrapped.parameters()):
                scores = evaluate_sets(unwrapped, held_sets, dev, readout, window)
                if held_raw and (best is None or scores["heldout_score"] < best["heldout_score"]):
                    best = {"step": run.step, **scores}
                    if "heldout_mouth_gain" in scores:  # predicted openings spread as much as the true ones
                        unwrapped.register_to_config(mouth_gain=round(scores["heldout_mouth_gain"], 4))
                    unwrapped.save_pretrained(run.path / "speech_to_latent")
                    best_path.write_text(json.dumps(best, indent=1) + "\n")
            run.note(loss=run.loss, latent_loss=lat_loss.item(), pose_loss=pose_loss.item(),
                     mouth_loss=mouth_loss.item(), **scores)
        run.end_step()
    if not scores and run.is_main:
        with ema_weights(ema, unwrapped.parameters()):
            scores = evaluate_sets(unwrapped, held_sets, run.device, readout, window)
    figures = run.figures(train_clips=len(train_items), heldout_clips=len(held_raw), augment=cfg.augment,
                          feature_normalization=cfg.feature_normalization, init_from=cfg.init_from, last=scores)
    if best is not None:
        figures.update(best_step=best["step"], **{k: v for k, v in best.items() if k != "step"})

    def export():
        if best is None:  # nothing held out: the last step is the model
            with ema_weights(ema, unwrapped.parameters()):
                unwrapped.save_pretrained(run.path / "speech_to_latent")

    return run.finish(figures, export)
