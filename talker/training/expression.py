"""Emotion as a warp of the decoder's frames (``talker add-emotion --method warp``), learned from
paired takes.

The speaker records the same lines twice or more: once neutral, and again with an emotion (the
way emotional talking-face corpora are recorded: MEAD has each actor read the same sentences in
every emotion; Wang et al., ECCV 2020). Each emotional take is aligned in time with its neutral
take by dynamic time warping of their log-mel spectra (as EVP pairs MEAD's takes; Ji et al.,
CVPR 2021), so that each emotional frame x_e has a neutral frame x_n saying the same sound, and
framed as the neutral take was cut (``talker prepare``'s square differs from take to take);
:class:`~talker.models.ExpressionWarp` learns warp(x_n, e) ≈ x_e, its fields read off x_n (blurred
by a random σ up to ``max_blur``, none by default) (at use it reads the refiner's frame scaled
down to the decoder's side, or the decoder's frame where there is no refiner; or off
the decoder's own rendering of x_n, ``read_from="decoder"``, :func:`decoded_takes`, the pair
then brought to where that rendering has the face, :func:`rendering_alignment`), the
loss weighted towards where the speaker's face moves (:func:`~.distill.motion_weights`); along an
edge that the emotional take's crop did not reach, the target is the neutral frame (:func:`seen_or`). Where the
takes kept sharper crops (``talker prepare --refiner-resolution``), the move is applied to the
sharp neutral frame and judged against the sharp emotional one, as the refiner's frames will
show it; else both frames are blurred alike at the decoder's side.

Why pairs: from the emotional frames alone, with the decoder's rendering of each frame's latent as
the warp's input, the warp learned nothing that held out (bench/results/emotion_warp_unpaired.json
records that run): the decoder's error on a frame is 11 times the whole change an emotion makes
(bench/emotion_signal.py: weighted squared error 0.097 against 0.0087 on the bundled speaker's
held-out clips), and each training clip holds one emotion, so that error, shared within a clip,
reads as the emotion. Paired takes leave only the emotion between input and target.

The decoders themselves stay as they are, and speech2latent is given no emotion: a speaker takes
one way of showing emotion, so one whose decoders take the intensities (``--method input``) or
that moves z_sem (``decoder``, ``latents``) is refused here.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import EMOTION_WARP, EXPRESSION_FIELD_SCALES as FIELD_SCALES, EXPRESSION_READ_FROM as READ_FROM
from ..errors import TalkerError
from ..frontends import log_mel
from ..models import ExpressionWarp
from ..models.expression import read_at
from .data import load_dataset, split_clips
from .distill import frames_to_x0, motion_weights

HELD_OUT_FRAMES = 512
CHANGE_BLUR = 1.5  # σ (pixels of the loss's frames) spreading each emotion's mean change over where it moves
CHANGE_CAP = 20.0  # the most an emotion's mean change map weighs, in units of its mean over the frame


def dtw_path(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """The dynamic-time-warping path between feature sequences ``a`` (N, F) and ``b`` (M, F)
    (Euclidean frame distance; steps (1, 0), (0, 1), (1, 1)): [(i, j), ...] from (0, 0) to (N−1, M−1)."""
    cost = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def frame_features(clip) -> np.ndarray:
    """(frames, 80) log-mel of a prepared clip's audio, one row per video frame."""
    n = clip.n_frames
    return log_mel(clip.audio[: n * 640], n).reshape(n, 4, -1).mean(1).numpy()


def reframe(frames: np.ndarray, crop: tuple[int, int, int], to: tuple[int, int, int]) -> np.ndarray:
    """(F, R, R, 3) uint8 frames cut from their videos at ``crop`` (x0, y0, side; ``talker
    prepare``'s) as they would be cut at ``to``: takes of one line are framed alike before they are
    compared (the face finder's square differs from take to take, more with some expressions)."""
    if tuple(crop) == tuple(to):
        return frames
    (x0, y0, side), (x1, y1, side1) = crop, to
    theta = torch.tensor([[[side1 / side, 0, (2 * (x1 - x0) + side1 - side) / side],
                           [0, side1 / side, (2 * (y1 - y0) + side1 - side) / side]]], dtype=torch.float32)
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
    grid = F.affine_grid(theta.expand(len(x), -1, -1), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def covered(crop: tuple[int, int, int], to: tuple[int, int, int]) -> np.ndarray:
    """(4,) the part of square ``to`` (x0, y0, side) that square ``crop`` covers, as fractions of
    ``to``'s side (left, top, right, bottom): a take reframed from ``crop`` to ``to``
    (:func:`reframe`) shows its own pixels there and the edge repeated outside."""
    (x0, y0, side), (x1, y1, side1) = crop, to
    box = np.array([x0 - x1, y0 - y1, x0 + side - x1, y0 + side - y1], np.float64) / side1
    return box.clip(0, 1).astype(np.float32)


def coverage_mask(boxes: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 4) boxes (:func:`covered`) → (B, side, side): 1 on the pixels inside each box by a pixel
    (where the reframed take's own pixels, not its repeated edge, are sampled; along a side where the
    box reaches the frame's edge there is no repeated edge, and the frame counts up to it), 0 elsewhere."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    margin = 1.0 / side
    inner = ((boxes > 0) & (boxes < 1)).float() * margin  # a margin only where the box ends inside the frame
    lo, hi = boxes[:, :2] + inner[:, :2], boxes[:, 2:] - inner[:, 2:]
    inside_x = (centres[None] >= lo[:, :1]) & (centres[None] <= hi[:, :1])
    inside_y = (centres[None] >= lo[:, 1:]) & (centres[None] <= hi[:, 1:])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


def seen_or(emotional: torch.Tensor, neutral: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) reframed emotional frames with the neutral frames' pixels where their own crop
    did not reach (``boxes``, :func:`covered`): a strip along an edge, outside the face, which the
    expression leaves as it was; reframed, it holds the take's edge repeated, which a warp would
    learn to smear onto every frame."""
    mask = coverage_mask(boxes, emotional.shape[-1])[:, None].to(emotional.dtype)
    return emotional * mask + neutral * (1 - mask)


def sharp_frames(clip, source: int, side: int) -> np.ndarray:
    """(F, side, side, 3) uint8: the clip's crops kept at ``source`` (``talker prepare
    --refiner-resolution``), area-downscaled to ``side``."""
    frames = clip.frames_at(source)
    if side == source:
        return frames
    x = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(side, side), mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def decoded_takes(pipe, clips, seed: int = 0, batch_size: int = 256, progress: bool = True,
                  refined: bool = False) -> dict:
    """{clip id: (F, R, R, 3) uint8}: each clip's frames as the speaker's default decoder renders
    them from their own z_sem (encoded, decoded from one fixed noise image, as the pipeline
    decodes): the frames the speaker's refiner renders its sharp frames from at use. ``refined``:
    those frames through the speaker's refiner and scaled back down to the decoder's side (area
    averaging), what the pipeline reads the warp's fields off where the speaker has a refiner
    (:meth:`~talker.pipelines.dae_talker.expression.ExpressionMixin.express_frames`)."""
    from tqdm.auto import tqdm

    from ..pipelines.images import postprocess_frames

    if refined and pipe.refiner is None:
        raise TalkerError("this speaker has no refiner: read the warp's fields off the decoder's frames")
    ae = pipe.autoencoder_for(pipe.default_decoder)
    ae.set_progress_bar_config(disable=True)  # one bar over the clips
    steps = pipe.default_steps(pipe.default_decoder)
    x_T = pipe.prepare_fixed_noise(torch.Generator().manual_seed(seed))
    out = {}
    with torch.inference_mode():
        for clip in tqdm(clips, desc="rendering the neutral takes", disable=not progress):
            frames = clip.frames
            decoded = np.concatenate([ae.decode(ae.encode(frames[s : s + batch_size]), x_T, steps, batch_size=64)
                                      for s in range(0, len(frames), batch_size)])
            if refined:
                decoded = np.concatenate([postprocess_frames(read_at(
                    pipe.refine_frames(frames_to_x0(decoded[s : s + 64])), decoded.shape[1]), "np")
                    for s in range(0, len(decoded), 64)])
            out[clip.id] = decoded
    return out


def rendering_alignment(frames: np.ndarray, rendered: np.ndarray) -> np.ndarray | None:
    """(2, 3) affine, in pixels of the decoder-size frames: where a speaker's rendering of a take
    (``rendered``, :func:`decoded_takes`) has the face that the take's own ``frames`` (F, R, R, 3)
    show, found by ECC (Evangelidis & Psarakis, 2008) between the two clips' mean frames. The
    decoder was trained on clips each framed its own way and renders a take's face up to a pixel
    or a degree off (a brow moves about as far for an emotion), so a move read off the rendering is
    learned on the takes brought to where the rendering has them (:func:`align_frames`). None
    where ECC does not converge."""
    import cv2

    gray = lambda x: cv2.cvtColor(x.mean(0).round().astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(gray(rendered), gray(frames), warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6), None, 5)
    except cv2.error:  # no convergence
        return None
    return warp


def align_frames(frames: np.ndarray, warp: np.ndarray, res: int) -> np.ndarray:
    """(F, S, S, 3) uint8 frames moved by ``warp`` (:func:`rendering_alignment`, in pixels of
    ``res``-side frames), scaled to their side S."""
    import cv2

    if not len(frames):
        return frames
    k = frames.shape[1] / res
    m = warp[:, :2].astype(np.float64)
    t = k * warp[:, 2] + 0.5 * (k - 1) * (1 - m.sum(1))  # the same map between pixel centres at side S
    w = np.concatenate([m, t[:, None]], 1)
    side = frames.shape[1]
    return np.stack([cv2.warpAffine(f, w, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE) for f in frames])


def paired_frames(neutral_clips, emotional_clips, n_emotions: int, crops: dict,
                  sharp: tuple[int, int] | None = None, read: dict | None = None) -> dict:
    """Frame pairs of each emotional take with the neutral take of the same id, aligned in time by
    :func:`dtw_path` and in the picture by :func:`reframe` (``crops``: {id(clip): its crop} for
    every clip given): "neutral" and "emotional" (F, R, R, 3) uint8, "emotion" (F, E) the emotional
    frame's intensities, "covered" (F, 4) the part of the frame its own take's crop covers
    (:func:`covered`; the rest is its edge repeated); with ``sharp`` (source, side), also "neutral_sharp" and "emotional_sharp",
    the same frames from the crops kept at ``source``, at ``side`` (:func:`sharp_frames`); with
    ``read`` ({id: (F, R, R, 3) uint8}, :func:`decoded_takes`), also "neutral_read", those frames of
    the neutral take, and every other frame of the pair brought to where they have the face
    (:func:`rendering_alignment`). Takes with no neutral counterpart are left out."""
    by_id = {c.id: c for c in neutral_clips}
    keys = (("neutral", "emotional", "emotion", "covered") + (("neutral_sharp", "emotional_sharp") if sharp else ())
            + (("neutral_read",) if read is not None else ()))
    out = {k: [] for k in keys}
    neutrals = {}  # each neutral take's frames (and kept crops), where its rendering has the face: once per take

    def neutral_of(ref):
        if ref.id not in neutrals:
            warp = None
            if read is not None:
                warp = rendering_alignment(ref.frames, read[ref.id])
                if warp is None:
                    warnings.warn(f"take {ref.id}: its rendering could not be aligned with it; its pairs stay as framed")
            res = ref.frames.shape[1]
            move = (lambda x: x) if warp is None else (lambda x: align_frames(x, warp, res))
            neutrals[ref.id] = move, move(ref.frames), move(sharp_frames(ref, *sharp)) if sharp else None
        return neutrals[ref.id]

    for clip in emotional_clips:
        ref = by_id.get(clip.id)
        if ref is None or clip.emotion is None:
            continue
        move, frames, kept = neutral_of(ref)
        i, j = map(np.array, zip(*dtw_path(frame_features(ref), frame_features(clip))))
        j = np.minimum(j, len(clip.emotion) - 1)
        e = clip.emotion[j, :n_emotions]
        keep = e.sum(1) > 0
        out["neutral"].append(frames[i[keep]])
        if read is not None:
            out["neutral_read"].append(read[ref.id][i[keep]])
        out["emotional"].append(move(reframe(clip.frames[j[keep]], crops[id(clip)], crops[id(ref)])))
        out["emotion"].append(e[keep])
        out["covered"].append(np.repeat(covered(crops[id(clip)], crops[id(ref)])[None], int(keep.sum()), 0))
        if sharp:
            out["neutral_sharp"].append(kept[i[keep]])
            out["emotional_sharp"].append(move(reframe(sharp_frames(clip, *sharp)[j[keep]], crops[id(clip)],
                                                       crops[id(ref)])))
    if not out["emotion"]:
        return {}
    pairs = {k: np.concatenate(v) for k, v in out.items()}
    pairs["emotion"] = torch.from_numpy(pairs["emotion"]).float()
    pairs["covered"] = torch.from_numpy(pairs["covered"])
    return pairs


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images each blurred by a Gaussian of its own ``sigma`` (B,) pixels (0: as they are)."""
    r = 3
    d = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(d[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    b, c, h, w = x.shape
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="replicate")
    kx = k.repeat_interleave(c, 0)[:, None, None, :]
    y = F.conv2d(y, kx, groups=b * c)
    y = F.conv2d(y, kx.transpose(2, 3), groups=b * c)
    return y.reshape(b, c, h, w)


def smoothness(fields: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring flow vectors ((B, E, 5, H, W) fields; flows only)."""
    flow = fields[:, :, :2]
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


def change_weights(pairs: dict, base: str, target: str, n_emotions: int, weight: float) -> torch.Tensor:
    """(E, H, W) loss weights, one map per emotion, on where its takes differ from the neutral ones
    on average: ``weight`` × |mean emotional frame − mean neutral frame| (blurred by
    :data:`CHANGE_BLUR` pixels, over its mean, capped at :data:`CHANGE_CAP`). The pairs' differences
    one by one are mostly the neutral and emotional takes out of step (a blink in one take, speech
    a frame apart), which the mean cancels; a brow raised or an eyelid lowered in every frame of
    the emotion stays, small as it is beside the mouth's motion, which the motion weights favour.
    Along an edge that an emotional take's crop did not reach, its frame counts as the neutral one
    (:func:`seen_or`), as the loss judges it: the edge it repeats there is no change of the face."""
    emotion = pairs["emotion"].numpy()
    side = pairs[base].shape[1]
    maps = []
    for k in range(n_emotions):
        rows = np.flatnonzero(emotion[:, k] > 0)
        diff = np.zeros(pairs[base].shape[1:], np.float64)
        for s in range(0, len(rows), 1024):
            chunk = rows[s : s + 1024]
            seen = coverage_mask(pairs["covered"][chunk], side).numpy()[..., None]
            diff += ((pairs[target][chunk].astype(np.float64) - pairs[base][chunk]) * seen).sum(0)
        change = torch.from_numpy(np.abs(diff / max(len(rows), 1)).mean(-1)).float()[None, None]
        change = blur(change, torch.tensor([CHANGE_BLUR]))[0, 0]
        maps.append(weight * (change / change.mean().clamp_min(1e-6)).clamp(max=CHANGE_CAP))
    return torch.stack(maps)


def pyramid_error(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, levels: int = 0) -> torch.Tensor:
    """Weighted squared error of (B, 3, H, W) frames ``out`` against ``target`` (``weights``
    (B or 1, H, W)), plus the same at ``levels`` coarser sides, each halving the last (2×2
    means, the weights averaged alike): a move the frame's own pixels judge only at the edges it
    crosses is judged at the coarser sides over the whole patch it shifts."""
    loss = ((out - target).pow(2).mean(1) * weights).mean()
    w = weights[:, None] if weights.dim() == 3 else weights[None, None]
    for _ in range(levels):
        out, target, w = F.avg_pool2d(out, 2), F.avg_pool2d(target, 2), F.avg_pool2d(w, 2)
        loss = loss + ((out - target).pow(2).mean(1, keepdim=True) * w).mean()
    return loss


def pair_error(model: ExpressionWarp | None, pairs: dict, weights: torch.Tensor, batch: int = 64) -> float:
    """Weighted squared error of the neutral frames (warped by ``model`` to the pairs' intensities;
    as they are for None) against their emotional frames; at the sharp frames' size where the pairs
    have them (the fields read off the decoder-size frame, or its decoded rendering where the pairs
    have it, the move applied to the sharp one); the emotional frames hold the neutral ones' pixels
    where their own crop did not reach (:func:`seen_or`)."""
    sharp = "neutral_sharp" in pairs
    read = "neutral_read" if "neutral_read" in pairs else "neutral"
    if model is not None and sharp and model.read_side == pairs["neutral_sharp"].shape[1]:
        read = "neutral_sharp"  # a warp that reads the sharp frames
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(pairs["emotion"]), batch):
            x = frames_to_x0(pairs[read][s : s + batch])
            onto = frames_to_x0(pairs["neutral_sharp" if sharp else "neutral"][s : s + batch])
            target = frames_to_x0(pairs["emotional_sharp" if sharp else "emotional"][s : s + batch])
            out = onto if model is None else model(x, pairs["emotion"][s : s + batch], onto=onto)
            target = seen_or(target, onto, pairs["covered"][s : s + batch])
            total += float(((out - target).pow(2).mean(1) * weights).sum())
    return round(total / (len(pairs["emotion"]) * weights.numel()), 5)


def load_takes(neutral_dir, data_dirs) -> dict:
    """The prepared neutral takes and emotional takes (``data_dirs``, one or more folders):
    "neutral" and "emotional" clips, "ids" the sorted ids that have a neutral take and an
    emotion-labelled one, "crops" {id(clip): its crop} for :func:`paired_frames`, and "kept" the
    side of the crops that every folder kept besides its frames (``talker prepare
    --refiner-resolution``), or None."""
    crops, kept = {}, set()

    def takes(folder):
        index, clips = load_dataset(folder)
        entries = {e["id"]: e for e in index["clips"]}
        crops.update({id(c): entries[c.id].get("crop", (0, 0, 1)) for c in clips})
        kept.add(index.get("refiner_resolution"))
        return clips

    neutral = takes(neutral_dir)
    emotional = [c for d in data_dirs for c in takes(d)]
    ids = sorted({c.id for c in neutral} & {c.id for c in emotional if c.emotion is not None})
    return {"neutral": neutral, "emotional": emotional, "ids": ids, "crops": crops,
            "kept": kept.pop() if len(kept) == 1 else None}


def train_expression(pipe, data_dirs, neutral_dir, steps: int = EMOTION_WARP["steps"],
                     batch_size: int = EMOTION_WARP["batch_size"], lr: float = EMOTION_WARP["lr"],
                     seed: int = EMOTION_WARP["seed"], channels: int = EMOTION_WARP["channels"],
                     motion_weight: float = EMOTION_WARP["motion_weight"],
                     smooth_weight: float = EMOTION_WARP["smooth_weight"],
                     sharp_side: int = EMOTION_WARP["sharp_side"],
                     change_weight: float = EMOTION_WARP["change_weight"],
                     field_scale: float = EMOTION_WARP["field_scale"],
                     read_from: str = EMOTION_WARP["read_from"],
                     max_blur: float = EMOTION_WARP["max_blur"],
                     pyramid: int = EMOTION_WARP["pyramid"],
                     forward_flow: bool = EMOTION_WARP["forward_flow"],
                     read_side: int | None = EMOTION_WARP["read_side"],
                     residual_scale: float | None = EMOTION_WARP["residual_scale"],
                     progress: bool = True) -> tuple[ExpressionWarp, dict]:
    """Train ``pipe``'s expression warp on the emotional takes of ``data_dirs`` (prepared datasets
    with per-frame emotion labels) paired with the neutral takes of the same ids in
    ``neutral_dir``; every tenth pair of takes is held out. Where every dataset kept its crops at a
    larger side (``talker prepare --refiner-resolution``), the move is learned at ``sharp_side``
    (0: at the decoder's): the fields are read off the decoder-size neutral frame, as at use, and
    the move applied to the sharp neutral frame is compared with the sharp emotional one, which
    shows how far a mouth corner or a brow really moves (at the decoder's 64², MediaPipe reads the
    truth's smile as half the width change it reads at 256²: bench/results/emotion_takes_read64.json).
    ``read_side``: the side the warp reads its fields off (None: the decoder's), or the sharp side,
    where it reads the sharp neutral frame (at use, the refiner's frame brought to that side).
    Returns the warp and a record: the held-out pairs' weighted error before and after warping."""
    from tqdm.auto import tqdm

    if (min(steps, batch_size, channels) < 1 or lr <= 0
            or min(motion_weight, smooth_weight, change_weight, sharp_side, max_blur, pyramid) < 0):
        raise TalkerError(f"steps, batch size and channels must be at least 1, lr positive, the weights, the sharp "
                          f"side, the blur and the pyramid's levels at least 0; got {steps}, {batch_size}, {channels}, "
                          f"{lr}, {motion_weight}, {smooth_weight}, {change_weight}, {sharp_side}, {max_blur}, {pyramid}")
    if field_scale not in FIELD_SCALES:
        raise TalkerError(f"the field scale must be one of {', '.join(map(str, FIELD_SCALES))}; got {field_scale}")
    if residual_scale is not None and not (residual_scale in FIELD_SCALES and residual_scale <= field_scale):
        raise TalkerError(f"the residual scale must be one of {', '.join(map(str, FIELD_SCALES))} no larger than the "
                          f"field scale {field_scale:g}; got {residual_scale}")
    if read_from not in READ_FROM:
        raise TalkerError(f"the warp reads its fields off one of {', '.join(READ_FROM)}; got {read_from!r}")
    if read_from == "refined" and pipe.refiner is None:
        raise TalkerError("this speaker has no refiner: read the warp's fields off the takes or the decoder's frames "
                          "(--read-from takes|decoder)")
    names = pipe.emotion_names
    if not names:
        raise TalkerError("this speaker has no emotion control (its speech2latent has no emotion names)")
    data_dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    takes = load_takes(neutral_dir, data_dirs)
    neutral, emotional, ids, crops = takes["neutral"], takes["emotional"], takes["ids"], takes["crops"]
    if not ids:
        raise TalkerError(f"no emotional take in {', '.join(map(str, data_dirs))} (clips with emotion labels) has a "
                          f"neutral take of the same id in {neutral_dir}: record each line neutral and with the "
                          "emotion, and prepare each set of takes as its own dataset with the same clip names")
    if any(c.emotion is not None and c.emotion.shape[1] < len(names) for c in emotional):
        raise TalkerError(f"the takes are labelled with fewer emotions than the speaker has ({', '.join(names)})")
    train_ids, held_ids = map(set, split_clips(ids))
    res = neutral[0].frames.shape[1]
    if res != pipe.resolution:
        raise TalkerError(f"{neutral_dir}: frames are {res}² but the speaker's decoder renders {pipe.resolution}²")
    if sharp_side % res:
        raise TalkerError(f"the sharp side must be 0 or a multiple of the decoder's side {res}; got {sharp_side}")
    source = takes["kept"]
    sharp = (source, sharp_side) if sharp_side > res and source and source >= sharp_side else None
    if sharp and source % sharp_side:
        raise TalkerError(f"the sharp side must divide the side of the crops the takes kept, {source}; got {sharp_side}")
    reads_sharp = bool(read_side) and read_side != res
    if reads_sharp and (not sharp or read_side != sharp[1] or read_from != "takes"):
        raise TalkerError(f"the warp reads its fields off the decoder's side {res} or, off the takes' own sharp "
                          f"frames, the sharp side{f' {sharp[1]}' if sharp else ' (the takes kept no larger crops)'}; "
                          f"got {read_side}")
    started = time.process_time()
    read = (decoded_takes(pipe, neutral, seed, progress=progress, refined=read_from == "refined")
            if read_from != "takes" else None)
    train = paired_frames([c for c in neutral if c.id in train_ids], [c for c in emotional if c.id in train_ids],
                          len(names), crops, sharp, read)
    if not train:
        raise TalkerError(f"{', '.join(map(str, data_dirs))}: no emotional frame in the paired takes")
    missing = [n for k, n in enumerate(names) if not (train["emotion"][:, k] > 0).any()]
    if missing:
        raise TalkerError(f"no paired training take shows {', '.join(missing)}")
    held = paired_frames([c for c in neutral if c.id in held_ids], [c for c in emotional if c.id in held_ids],
                         len(names), crops, sharp, read)
    if held:
        pick = np.linspace(0, len(held["emotion"]) - 1, min(HELD_OUT_FRAMES, len(held["emotion"]))).round().astype(int)
        held = {k: v[pick] for k, v in held.items()}
    base, target = ("neutral_sharp", "emotional_sharp") if sharp else ("neutral", "emotional")
    weights = motion_weights(train[base][:: max(1, len(train[base]) // 4096)], motion_weight)
    change = change_weights(train, base, target, len(names), change_weight) if change_weight else None

    torch.manual_seed(seed)
    model = ExpressionWarp(emotion_names=tuple(names), resolution=res, channels=channels, field_scale=field_scale,
                           forward_flow=forward_flow, read_side=read_side if reads_sharp else None,
                           residual_scale=residual_scale)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="expression warp", disable=not progress):
        idx = torch.randint(len(train["emotion"]), (batch_size,), generator=g)
        sigma = torch.rand(batch_size, generator=g) * max_blur
        x = blur(frames_to_x0(train["neutral"][idx.numpy()]), sigma)
        read_off = x if read is None else frames_to_x0(train["neutral_read"][idx.numpy()])
        if sharp:  # the decoder's softness is on the frame the fields are read off; the move is judged sharp
            onto, y = frames_to_x0(train[base][idx.numpy()]), frames_to_x0(train[target][idx.numpy()])
            read_off = onto if reads_sharp else read_off
        else:
            onto, y = x, blur(frames_to_x0(train[target][idx.numpy()]), sigma)
        w = weights if change is None else weights + torch.einsum("bk,khw->bhw", train["emotion"][idx], change)
        y = seen_or(y, onto, train["covered"][idx])  # not the edge a reframed take repeats
        loss = pyramid_error(model(read_off, train["emotion"][idx], onto=onto), y, w, pyramid)
        if smooth_weight:
            loss = loss + smooth_weight * smoothness(model.fields(read_off))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval().requires_grad_(False)
    record = {"method": "warp", "data": [str(d) for d in data_dirs], "neutral": str(neutral_dir),
              "takes": len(train_ids), "frames": int(len(train["emotion"])),
              "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "channels": channels,
              "field_scale": field_scale, "residual_scale": residual_scale, "forward_flow": forward_flow, "read_side": model.read_side,
              "read_from": read_from, "max_blur": max_blur,
              "parameters": sum(p.numel() for p in model.parameters()),
              "motion_weight": motion_weight, "smooth_weight": smooth_weight, "change_weight": change_weight,
              "sharp_side": sharp[1] if sharp else None, "pyramid": pyramid,
              "training_loss_first_last": [round(float(np.mean(losses[:20])), 5), round(float(np.mean(losses[-20:])), 5)],
              "cpu_minutes": round((time.process_time() - started) / 60, 1)}
    if held:
        record["heldout_error"] = {"neutral": pair_error(None, held, weights), "warped": pair_error(model, held, weights),
                                   "frames": len(held["emotion"]), "takes": len(held_ids)}
    return model, record


def store_expression(folder: str | Path, model: ExpressionWarp, record: dict) -> None:
    """Write ``model`` as the ``expression/`` component of the speaker folder (float32: it is
    small); ``record`` goes to speaker.json and the model card."""
    from ..hub import read_speaker, write_speaker
    from .export import store_component, write_model_card

    folder = Path(folder)
    store_component(folder, "expression", model, "talker.models.expression")
    speaker = read_speaker(folder)
    speaker["emotion"] = record
    write_speaker(folder, speaker)
    write_model_card(folder, speaker=speaker)
