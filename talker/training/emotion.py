"""Emotion directions: where a speaker's own frames move in z_sem when an emotion is on.

speech2latent learns emotion as one more input among many, and under-plays it: on the bundled
speaker its change of z_sem at intensity 1.0 covers 40–56% of the encoder's own emotion direction
for sad, angry and surprised, with as much again off that direction (``bench/emotion.py``). The
semantic encoder, though, separates emotion cleanly: a least-squares fit of the training frames'
latents on their emotion intensities (mouth opening and width, blinks and head pose held as
covariates where the clips have synthetic truth) gives one direction per emotion.
``talker add-emotion --method latents`` stores those directions in a speaker's speech2latent
(``emotion_directions``), which then shows an emotion at intensity i as z_sem + i × direction:
additive for mixes, and exactly neutral at zero.

``--method decoder`` (:func:`learn_emotion_directions`) learns them through the speaker's decoder
instead, against the clips' frames, and as offsets at several intensities (knots): the decoder
answers a straight direction unevenly (on the bundled speaker happy at 0.5 showed a tenth of happy
at 1.0), so each intensity can get an offset of its own.

The decoder cannot show much more than the encoder keeps of an expression, though, so the default
(``--method input``, :mod:`.emotion_input`) gives the decoders the intensities themselves;
:func:`add_emotion` runs any of the three.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..defaults import EMOTION_LEARNING, EMOTION_METHODS, SAMPLE_RATE
from ..errors import TalkerError
from ..hub import read_speaker
from ..models.speech2latent import emotion_knot_weights
from ..pipelines.dae_talker.windows import DEFAULT_WINDOW
from .data import load_dataset, split_clips


def fit_emotion_directions(data_dir: str | Path, n_emotions: int) -> tuple[np.ndarray, dict]:
    """(E, D) directions from the training clips of a prepared, encoded dataset (``talker
    encode``'s latents, per-frame emotion labels), and a record of the fit."""
    _, clips = load_dataset(data_dir)
    train, _ = split_clips(clips)
    usable = [c for c in train if c.emotion is not None and (c.path / "latents.npy").is_file()]
    if not usable:
        raise TalkerError(f"{data_dir}: no training clip has both emotion labels and latents (run `talker encode`)")
    with_truth = all((c.path / "truth.npz").is_file() for c in usable)
    rows, latents = [], []
    for c in usable:
        z = c.latents()
        n = min(len(z), c.n_frames, len(c.emotion))
        columns = [np.ones(n), c.emotion[:n, :n_emotions]]
        if with_truth:  # what else moves the face, so that it is not mistaken for emotion
            t = np.load(c.path / "truth.npz")
            columns += [t["mouth_open"][:n], t["mouth_width"][:n], t["blink"][:n], t["pose"][:n] / 10]
        rows.append(np.column_stack(columns))
        latents.append(z[:n])
    x, z = np.concatenate(rows), np.concatenate(latents)
    labels = x[:, 1 : 1 + n_emotions]
    missing = [k for k in range(n_emotions) if np.ptp(labels[:, k]) == 0]
    if missing:
        raise TalkerError(f"{data_dir}: emotion {', '.join(map(str, missing))} never varies in the training clips; "
                          "its direction cannot be fitted")
    coef, *_ = np.linalg.lstsq(x, z, rcond=None)
    fitted = 1 - (z - x @ coef).var(0).sum() / z.var(0).sum()
    record = {"method": "directions", "data": str(data_dir), "clips": len(usable), "frames": int(len(x)),
              "covariates": ["mouth_open", "mouth_width", "blink", "pose"] if with_truth else [],
              "variance_explained": round(float(fitted), 4),
              "direction_norms": np.linalg.norm(coef[1 : 1 + n_emotions], axis=1).round(3).tolist()}
    return coef[1 : 1 + n_emotions].astype(np.float32), record


@torch.no_grad()
def speech_latents(pipe, clip, window: int) -> torch.Tensor:
    """(N, D) z_sem that the speaker's speech2latent gives ``clip``'s speech with no emotion, on
    the pipeline's windows and with the clip's own head pose (what the decoder starts from)."""
    wave, n, out = clip.audio, clip.n_frames, []
    spf = SAMPLE_RATE // pipe.fps
    for start in range(0, n, window):
        m = min(window, n - start)
        pose = torch.from_numpy(clip.pose[start : start + m]).float()[None].to(pipe.speech_to_latent.device)
        out.append(pipe.predict_latents(wave[start * spf : (start + m) * spf], m, pose, None)["z_sem"].float().cpu())
    return torch.cat(out)


def decoder_training_set(pipe, clips, progress: bool = True) -> dict[str, torch.Tensor | np.ndarray]:
    """What :func:`learn_emotion_directions` fits on: for every frame of ``clips`` (with emotion
    labels), speech2latent's neutral z_sem ("speech", (F, D)), the frame's intensities
    ("emotion", (F, E)), the frame itself ("frames", (F, R, R, 3) uint8) and how many clips ("clips")."""
    from tqdm.auto import tqdm

    n_emotions = len(pipe.emotion_names)
    speech, emotion, frames = [], [], []
    for c in tqdm(clips, desc="speech latents", disable=not progress):
        z = speech_latents(pipe, c, DEFAULT_WINDOW)
        n = min(len(z), len(c.emotion), c.n_frames)
        speech.append(z[:n])
        emotion.append(torch.from_numpy(c.emotion[:n, :n_emotions]).float())
        frames.append(c.frames[:n])
    return {"speech": torch.cat(speech), "emotion": torch.cat(emotion), "frames": np.concatenate(frames),
            "clips": len(clips)}


def learn_emotion_directions(pipe, data_dir: str | Path, steps: int = EMOTION_LEARNING["steps"],
                             batch_size: int = EMOTION_LEARNING["batch_size"], lr: float = EMOTION_LEARNING["lr"],
                             seed: int = EMOTION_LEARNING["seed"], knots: int = EMOTION_LEARNING["knots"],
                             hold_mouth: bool = EMOTION_LEARNING["hold_mouth"], progress: bool = True,
                             sets: tuple[dict, dict] | None = None) -> tuple[np.ndarray, dict]:
    """(E, K, D) offsets (K = ``knots``; (E, D) directions when 1) learned through the speaker's
    own decoder, and a record of the fit.

    Each training frame of ``data_dir`` (a prepared dataset with per-frame emotion labels) is
    rendered by the speaker's default decoder from z_sem = s + c + offset(e), where s is what
    speech2latent makes of the clip's speech with no emotion (:func:`speech_latents`), e the
    frame's intensities, offset(e) the emotions' offsets at their knots weighted as
    :func:`~talker.models.speech2latent.emotion_knot_weights` weighs them, and c a shared offset
    (what speech2latent gets wrong on every frame, whatever the emotion; fitted, then dropped);
    the offsets and c minimise the frames' squared error, weighted towards where the face moves.
    They start from the least-squares directions of :func:`fit_emotion_directions` (each knot at
    its intensity × the direction). ``hold_mouth`` (with a speech2latent that reads the mouth
    opening out of z_sem): every offset is kept off the mouth read-out (moved along the mouth
    direction until its read-out change is zero), so that an emotion does not move the opening that
    speech2latent reads (the decoder can still part the lips by other ways: on the bundled speaker
    happy and sad at 1.0 still left them apart in pauses). The held-out clips' error with and without the offsets is recorded.
    ``sets``: the (training, held-out) :func:`decoder_training_set` of ``data_dir``'s split, when
    already made."""
    from tqdm.auto import tqdm

    from ..pipelines.ddim import ddim_decode
    from .distill import frames_to_x0, motion_weights

    if steps < 1 or batch_size < 1 or knots < 1 or lr <= 0:
        raise TalkerError(f"steps, batch size and knots must be at least 1 and lr positive; "
                          f"got {steps}, {batch_size}, {knots}, {lr}")
    start_directions, _ = fit_emotion_directions(data_dir, len(pipe.emotion_names))
    unet, scheduler = pipe.decoder_for(pipe.default_decoder)
    if sets is None:
        _, clips = load_dataset(data_dir)
        sets = tuple(decoder_training_set(pipe, [c for c in group if c.emotion is not None], progress)
                     for group in split_clips(clips))
    train, held = sets
    if train["frames"].shape[1] != unet.config.sample_size:
        raise TalkerError(f"{data_dir}: frames are {train['frames'].shape[1]}² but the speaker's decoder renders "
                          f"{unet.config.sample_size}²")
    n_steps, device = pipe.default_steps(), unet.device
    weights = motion_weights(train["frames"], 2.0)
    s2l = pipe.speech_to_latent
    scale = s2l.latent_std.float().cpu()
    at = torch.arange(1, knots + 1).float()[:, None] / knots
    start = torch.from_numpy(start_directions)[:, None] * at  # (E, K, D): each knot at its intensity
    table = torch.nn.Parameter(start / scale)  # in units of the latents' spread
    offset = torch.nn.Parameter(torch.zeros_like(scale))
    opt = torch.optim.Adam([table, offset], lr=lr)
    g = torch.Generator().manual_seed(seed)
    x_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    hold = hold_mouth and bool(s2l.config.get("mouth_readout"))

    def offsets():
        """(E, K, D) in z_sem units, off the mouth read-out when ``hold``."""
        return off_mouth(table * scale, s2l) if hold else table * scale

    def render(s, e, noise, with_offset=True):
        shift = emotion_knot_weights(e, knots).flatten(-2) @ offsets().flatten(0, 1)
        z = s + (offset * scale if with_offset else 0) + shift
        return ddim_decode(unet, scheduler, z.to(device), noise.to(device), n_steps, len(z), precision="float32")

    def error(x, target):
        return (((x.float().cpu() - target) ** 2).mean(1) * weights).mean()

    losses = []
    unet.requires_grad_(False)
    try:
        for _ in tqdm(range(steps), desc="emotion directions", disable=not progress):
            idx = torch.randint(len(train["speech"]), (batch_size,), generator=g)
            target = frames_to_x0(train["frames"][idx.numpy()])
            noise = torch.randn(batch_size, *x_shape, generator=g)
            loss = error(render(train["speech"][idx], train["emotion"][idx], noise), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        record = {"method": "decoder", "data": str(data_dir), "clips": train["clips"],
                  "frames": int(len(train["speech"])), "knots": knots, "hold_mouth": hold,
                  "steps": steps, "batch_size": batch_size, "lr": lr,
                  "training_error_first_last": [round(float(np.mean(losses[:20])), 5),
                                                round(float(np.mean(losses[-20:])), 5)]}
        if len(held["speech"]):
            pick = np.linspace(0, len(held["speech"]) - 1, min(256, len(held["speech"]))).round().astype(int)
            target = frames_to_x0(held["frames"][pick])
            noise = torch.randn(len(pick), *x_shape, generator=torch.Generator().manual_seed(seed + 1))
            s, e = held["speech"][pick], held["emotion"][pick]
            with torch.no_grad():
                record["heldout_error"] = {"with_directions": round(float(error(render(s, e, noise, False), target)), 5),
                                           "without": round(float(error(render(s, 0 * e, noise, False), target)), 5),
                                           "frames": len(pick)}
    finally:
        unet.requires_grad_(True)
    with torch.no_grad():
        learned = offsets().numpy().astype(np.float32)
    learned = learned[:, 0] if knots == 1 else learned
    at_one = learned[:, -1] if knots > 1 else learned  # each emotion's offset at intensity 1
    record["direction_norms"] = np.linalg.norm(at_one.astype(np.float64), axis=1).round(3).tolist()
    return learned, record


def off_mouth(offsets: torch.Tensor, s2l) -> torch.Tensor:
    """(..., D) z_sem ``offsets`` moved along ``s2l``'s mouth direction until its mouth read-out
    (``mouth_readout``) no longer changes with them: what is left cannot open or shut the lips."""
    weight, direction = s2l.mouth_weight.float().cpu(), s2l.mouth_direction.float().cpu()
    unit = (direction @ weight).clamp_min(1e-6)  # read-out change per unit step along the mouth direction
    return offsets - ((offsets @ weight) / unit)[..., None] * direction


def add_emotion(folder: str | Path, data_dir, method: str = EMOTION_METHODS[0], progress: bool = True,
                neutral: str | Path | None = None, **learn) -> dict:
    """Teach the speaker folder's model to show emotion from ``data_dir`` (a prepared, encoded
    dataset with per-frame emotion labels; for "warp", one or more prepared datasets of emotional
    takes, paired with the neutral takes of the same clip names in ``neutral``) and store it
    there; speaker.json and the model card record it. ``method`` "warp": an expression warp of
    the decoder's frames (:func:`~.expression.train_expression`); "input": the decoders' own emotion input
    (:func:`~.emotion_input.train_emotion_input`); "decoder": offsets of z_sem learned through the
    decoder (:func:`learn_emotion_directions`); "latents": directions fitted to the encoder's
    latents (:func:`fit_emotion_directions`). ``learn``: the chosen method's settings. A speaker
    takes one way: z_sem offsets on top of decoders that take the emotion, or a warp on top of
    either, would show it twice (a speaker's warp may be trained again).
    Returns the record."""
    from ..pipelines import DAETalkerPipeline
    from .emotion_input import store_emotion_input, train_emotion_input
    from .expression import store_expression, train_expression

    if method not in EMOTION_METHODS:
        raise TalkerError(f"method must be one of {', '.join(EMOTION_METHODS)}; got {method!r}")
    folder = Path(folder)
    pipe = DAETalkerPipeline.from_pretrained(folder)
    if not pipe.emotion_names:
        raise TalkerError(f"{folder}: this speaker has no emotion control")
    has_input = any(getattr(u, "takes_emotion", False) for u in (pipe.unet, pipe.distilled_unet) if u is not None)
    has_directions = bool(pipe.speech_to_latent.config.get("emotion_directions"))
    shown = "input" if has_input else read_method(folder) if has_directions else "warp" if pipe.expression else None
    if shown is not None and shown != method and "warp" in (shown, method):
        raise TalkerError(f"{folder}: this speaker already shows emotion by method {shown}; method {method} on top "
                          "would show it twice: start from the speaker without it")
    if method == "input" and has_directions:
        raise TalkerError(f"{folder}: this speaker already shows emotion along directions in z_sem (method "
                          f"{read_method(folder)}); the decoders' emotion input is trained for a speaker whose "
                          "speech2latent takes emotion as an input: start from the speaker without them")
    if method != "input" and has_input:
        raise TalkerError(f"{folder}: this speaker's decoders take the emotion as an input (method input); "
                          "directions in z_sem would show it twice: start from the speaker without it")
    if method == "warp" and neutral is None:
        raise TalkerError("method warp learns from paired takes: give the neutral takes (--neutral DATA) as well as "
                          "the emotional ones (--data DATA ...)")
    if method != "warp" and not isinstance(data_dir, (str, Path)):
        if len(data_dir) != 1:
            raise TalkerError(f"method {method} takes one dataset (--data); got {len(data_dir)}")
        data_dir = data_dir[0]
    pipe.set_progress_bar_config(disable=True)
    if method == "warp":
        model, record = train_expression(pipe, data_dir, neutral, progress=progress, **learn)
        store_expression(folder, model, record)
        return record
    if method == "input":
        trained, record = train_emotion_input(pipe, data_dir, progress=progress, **learn)
        if has_input:  # decoders trained before keep their rows; one trained again keeps its earlier row
            old = read_speaker(folder).get("emotion", {}).get("decoders", {})
            for name, row in record["decoders"].items():
                if name in old:
                    row["continued_from"] = old[name]
            record["decoders"] = {**old, **record["decoders"]}
        store_emotion_input(pipe, folder, trained, record)
        return record
    if method == "decoder":
        directions, record = learn_emotion_directions(pipe, data_dir, progress=progress, **learn)
    else:
        directions, record = fit_emotion_directions(data_dir, len(pipe.emotion_names))
    store_emotion_directions(pipe, folder, directions, record)
    return record


def read_method(folder: Path) -> str:
    """How the speaker folder's emotion was added (speaker.json), or "unknown"."""
    return str(read_speaker(folder).get("emotion", {}).get("method", "unknown"))


def store_emotion_directions(pipe, folder: Path, directions: np.ndarray, record: dict) -> None:
    """Write (E, D) ``directions`` (or (E, K, D) offsets at K knots) into the speech2latent networks of the speaker folder that
    ``pipe`` was loaded from, each in its stored dtype; ``record`` goes to speaker.json and the
    model card."""
    from ..hub import read_speaker, stored_dtype, write_speaker
    from ..models import Speech2Latent
    from .export import write_model_card

    for name in ("speech_to_latent", "live_speech_to_latent"):
        old = getattr(pipe, name, None)
        if old is None:
            continue
        config = {k: v for k, v in old.config.items() if not k.startswith("_")}
        knots = 1 if directions.ndim == 2 else directions.shape[1]
        new = Speech2Latent(**{**config, "emotion_directions": True, "emotion_knots": knots})
        new.load_state_dict(old.state_dict(), strict=False)  # everything but the directions
        new.set_emotion_directions(directions)
        torch.nn.Module.to(new.eval(), stored_dtype(folder / name))
        new.save_pretrained(folder / name)
    speaker = read_speaker(folder)
    speaker["emotion"] = record
    write_speaker(folder, speaker)
    write_model_card(folder, speaker=speaker)
