"""Emotion control, measured against the truth: how far each intensity moves the face.

    python bench/emotion.py --out bench/results/emotion.json [--model checkpoints/astronaut-64] \
        [--data runs/bundled/heldout-espeak] [--train-data runs/bundled/voices|none] [--seconds 6] [--decoder ddim]

On a held-out clip (never trained on), with each emotion at 0.25, 0.5, 0.75 and 1.0, a mix of two,
and none:

- **truth**: the clip's own face states (mouth, blinks, head pose; from ``talker synth``) rendered by
  the synthetic renderer with that emotion, cropped and scaled as ``talker prepare`` cropped the clip,
  at the size the speaker's frames come in (its refiner's; ``truth_size``);
- **generated**: the speaker driven by the clip's speech with that emotion;
- **direction**: the neutral generated latents moved by the emotion's offset in the speaker's
  latent space (its direction × intensity, or its offsets at knots), decoded (what ``talker
  add-emotion`` makes of it);
- **reconstruction**: the truth frames through the speaker's encoder and decoder (what the latent
  space and decoder can show of the truth at all); for a decoder that takes the emotion as an
  input of its own (``talker add-emotion --method input``) or a speaker with an expression warp
  (``--method warp``), also with the intensities given to it (``reconstruction_with_input``);

all read by the same MediaPipe face mesh (lip gap, mouth-corner lift, mouth width, brow height, eye
opening, each ÷ the eye-corner distance). A change is the mean feature with the emotion minus
neutral, frame by frame. A feature counts where the truth moves it by more than 3 × (the standard
error of the truth's change + that of the generated change), i.e. more than the probe can tell;
for those the ratio generated ÷ truth is reported (the bar: 0.8–1.2), the
monotony (change at 0.5 ÷ change at 1.0; the bar: 0.4–0.6; the truth's own beside it, as the
renderer's features need not move in proportion to its intensity) and lip-sync at 1.0 against neutral
(mouth correlation with the truth's mouth opening, lips closed in pauses; ``gap_slope``, the
slope of the lip gap with the emotion on the lip gap without it, frame by frame, beside the
truth's own: under the truth's, the emotion flattens the speech's opening). Lips count as closed
under the gap that the truth's own shut-mouth frames *with the same emotion* stay under: an
emotion reshapes the lips, and the probe reads a smile's or a frown's closed lips as slightly
apart (the truth's own frames at happy, sad or angry 1.0 are closed in none of the pauses by
neutral's threshold), so neutral's threshold would count the truth itself as failing. The
truth frames' own scores (by both thresholds), and the generated frames' by neutral's, are
reported beside them, with the mean lip gap in the pauses (``pause_gap*``: the speaker's and the
truth's, with the emotion and without, and the warp's move on the truth's own neutral frames) and
the threshold itself (``closed_threshold``): how far from it the pauses' lips are; and the same read
with the truth rendered at the speaker's own head poses (``at_speaker_pose``: the emotion's and
neutral's thresholds from those frames, the speaker's pauses closed under each, the truth's and the
warp-on-truth's pauses), since the probe's lip gap depends on the head's yaw and pitch and the
speaker's head is not where the truth's is. Each emotion's change at 0.5 and 1.0 is also held
against the truth rendered at the speaker's own head poses (``ratio_at_speaker_pose``, with
``truth_change_at_speaker_pose`` and ``counted_at_speaker_pose``), for the same reason: a brow's
height or a lid's opening reads differently as the head nods. ``--pose clip`` drives the speaker's
head with the held-out clip's own estimated poses instead of its own from the speech, so that the
speaker's head is where the truth's is and only the face differs.

What the face itself did, without the probe: the renderer places every point of the face mesh
(numbered as MediaPipe numbers them), so the truth's features are also read off its own landmarks
(``truth_geometric_change``, the same five features, the same frames). The probe reads some
features the face never moved (sad leaves the lip gap and the mouth's width where they were, and
the probe reads them opening and narrowing) and reads others short (a third of sad's drop of the
mouth corners); ``truth_probe_over_geometry`` is the probe's change ÷ the face's, and
``counted_by_face`` marks the counted features the face moved the way the probe reads them by more
than the probe can tell. For a speaker with an expression warp, its own move of the speaker's face
is read the same way (``warp_geometric_change``): the points the probe found on the speaker's
neutral frames, each carried where the warp's flow takes the pixel under it, against the face's
change on every feature that moves by at least ``GEOMETRY_FLOOR`` (``warp_geometric_ratio``), and
against the face's move as the truth's frames show it, read the same way (``warp_visible_ratio``:
the points the probe finds on the truth's neutral frames carried by the renderer's own move,
``truth_visible_change``; :func:`visible_geometry`). Lip-sync is read the same way at 1.0
(``lipsync_by_geometry``): the lip gap of the speaker's neutral frames' points carried by the warp,
frame by frame, scored as neutral's own gap is (mouth correlation with the truth's mouth opening,
lips closed in pauses under neutral's threshold: the renderer leaves the lips' gap as the speech
sets it whatever the emotion), against neutral's scores; whether the warp's move parts shut lips
or flattens the speech's opening, apart from how the probe reads a smiling mouth.

The latent view: the emotion's direction is the speaker's own (``talker add-emotion``) where it has
them, else where the speaker's own frames move in z_sem when the emotion is on (a least-squares fit
over the training clips' encoder latents, with mouth, blink and pose as covariates); speech2latent's change of z_sem at 1.0 is projected on it (1.0 = all of it),
and so is the encoder's change between the truth's frames with the emotion and without
(``truth_latent_along_direction``; 1.0 if the fitted direction is the encoder's own response to
the emotion; ``truth_latent_change_over_direction``: the size of that change ÷ the direction's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from talker.defaults import DECODERS
from talker.evaluation.metrics import PROBE_FEATURES as FEATURES, landmark_features
from talker.evaluation.results import write_results

INTENSITIES = (0.25, 0.5, 0.75, 1.0)
# the least change of a feature (÷ the eye-corner distance: 0.6 pixel of the truth's 256² frames) off
# the renderer's landmarks that the warp's own move is held against
GEOMETRY_FLOOR = 0.01
SYNTH_SIDE = 256  # the side talker synth rendered the held-out clips and takes at (their crops are in its pixels)


def render_truth(truth: dict, emotion: np.ndarray, frames, crop, *resolutions: int) -> list[np.ndarray]:
    """The clip's face states at ``frames`` (indices) with ``emotion`` instead of theirs, as
    ``talker prepare`` crops them: one (N, R, R, 3) array for each of ``resolutions``."""
    from talker.data.face import FaceState, SyntheticFace
    from talker.data.prepare import crop_frame

    face = SyntheticFace(SYNTH_SIDE)
    rendered = [face.render(FaceState.from_truth(truth, k, emotion)) for k in frames]
    return [np.stack([crop_frame(f, crop, r) for f in rendered]) for r in resolutions]


def truth_geometry(truth: dict, emotion: np.ndarray, frames) -> np.ndarray:
    """(N, 5) features of the clip's face states at ``frames`` with ``emotion``, read off the
    renderer's own landmarks (where it puts each point of the face mesh; no probe): what the face
    itself did, head pose included."""
    from talker.data.face import FaceState, SyntheticFace

    face = SyntheticFace(SYNTH_SIDE)
    points = [face.landmarks(FaceState.from_truth(truth, k, emotion))[0][:, :2] for k in frames]
    return landmark_features(np.stack(points))


def face_move(face, neutral, emotional, crop, side: int) -> np.ndarray:
    """(side, side, 2) the face's own move from renderer state ``neutral`` to ``emotional``
    (:class:`~talker.data.face.FaceState`), as a backward flow in pixels of ``crop`` (x0, y0,
    side of the renderer's frame) at ``side``: pixel p of the emotional frame shows the neutral
    frame's p + flow(p) (the renderer's :meth:`~talker.data.face.SyntheticFace.move_between`, cut
    as the frame was cut)."""
    import cv2

    flow = face.move_between(neutral, emotional)
    x0, y0, s = crop
    at = (np.arange(side) + 0.5) / side * s - 0.5  # the crop's pixel centres in the frame's pixels
    mx, my = np.meshgrid(at + x0, at + y0)
    return cv2.remap(flow, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE) * side / s


def visible_geometry(truth: dict, emotion: np.ndarray, frames, crop=(0, 0, SYNTH_SIDE), side: int = SYNTH_SIDE,
                     marks: np.ndarray | None = None) -> np.ndarray:
    """(N, 5) how the clip's face states at ``frames`` change the features when ``emotion`` is
    added, read as a warp's change is read (:func:`warp_geometry`): points on the frames without
    it carried by the face's own move to the frames with it (:func:`face_move`, the frames cut at
    ``crop`` and brought to ``side``), so that a point the move takes behind a nearer part of the
    face counts where its frame shows it. ``marks``: (N, ≥468, 2) the points, fractions of the cut
    frame (those the probe finds on the renderer's frames without the emotion, as it finds the
    warp's on the speaker's); None: the renderer's own landmarks. Surprise raises the upper lids
    past the irises' tops, and the frame shows the lids' edge 60–80% as far up as the
    renderer's landmarks put it (:func:`truth_geometry`, which counts the landmarks)."""
    from talker.data.face import FaceState, SyntheticFace
    from talker.evaluation.metrics import MESH_POINTS

    face = SyntheticFace(SYNTH_SIDE)
    zero = np.zeros_like(np.asarray(emotion, np.float64))
    x0, y0, cut = crop
    points, flows = [], []
    for k in frames:
        plain, moved = FaceState.from_truth(truth, k, zero), FaceState.from_truth(truth, k, emotion)
        if marks is None:
            points.append(((face.landmarks(plain)[0][:MESH_POINTS, :2] - face.offset) * face.scale - [x0, y0]) / cut)
        flows.append(face_move(face, plain, moved, crop, side))
    before = np.stack(points) if marks is None else marks
    carried = follow(before, torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2))
    return landmark_features(carried) - landmark_features(before)


def flow_at(points: np.ndarray, flow: torch.Tensor) -> np.ndarray:
    """(N, 2, H, W) ``flow`` (pixels) read at (N, P, 2) ``points`` (fractions of the frame;
    bilinear, the border repeated) → (N, P, 2) pixels."""
    import torch.nn.functional as F

    grid = torch.from_numpy(np.nan_to_num(points * 2 - 1)).float()[:, :, None]  # (N, P, 1, 2)
    at = F.grid_sample(flow.detach().float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return at[..., 0].permute(0, 2, 1).double().numpy()


def follow(points: np.ndarray, flow: torch.Tensor, iterations: int = 100) -> np.ndarray:
    """(N, P, 2) points (fractions of the frame) → where they are after a backward warp by
    ``flow`` ((N, 2, H, W) pixels: the moved frame's pixel p is the frame's p + flow(p)): the p
    with p + flow(p) = the point, by damped fixed-point iteration (a raised brow's steep flow
    makes the plain iteration swing about it)."""
    h, w = flow.shape[-2:]
    size = np.array([w, h], np.float64)
    target = points * size  # pixels, centres at i + 0.5
    p = target.copy()
    for _ in range(iterations):
        p = p + 0.5 * (target - flow_at(p / size, flow) - p)
    return p / size


def warp_geometry(pipe, frames: np.ndarray, marks: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(N, 5): how ``pipe``'s expression warp at intensities ``e`` moves the features of its
    ``frames`` (uint8, as the pipeline returns them), off the points the probe found on them
    (``marks``, :meth:`~talker.evaluation.metrics.FaceProbe.landmarks`), each carried where the
    warp's flow takes the pixel under it (no probe on the moved frames; the colour residual,
    which moves no point, aside)."""
    from talker.training.distill import frames_to_x0

    x = frames_to_x0(frames)
    with torch.inference_mode():  # the warp reads the frames at its own side
        flow, _ = pipe.expression.move_at(x, torch.from_numpy(e).float()[None], x.shape[-2:])
    return landmark_features(follow(marks, flow)) - landmark_features(marks)


def geometric_lipsync(gap: np.ndarray, neutral_gap: np.ndarray, neutral_truth_gap: np.ndarray, truth: dict,
                      n: int) -> dict:
    """Lip-sync of the lip gap the warp's move gives the speaker's neutral frames (``gap``, per
    frame: neutral's ``neutral_gap`` with the carried points' change) against neutral's own, both
    scored by :func:`~talker.evaluation.metrics.lipsync_scores` under neutral's threshold (from the
    truth's neutral frames' gaps, ``neutral_truth_gap``): the changes of mouth correlation and of
    lips closed in pauses, the issue's lip-sync bar read off the move itself."""
    from talker.evaluation.metrics import gap_slope, lipsync_scores

    moved, still = (lipsync_scores(g, neutral_truth_gap, truth, n) for g in (gap, neutral_gap))
    return {"mouth_corr": round(moved["mouth_corr"], 4), "silent_closed": round(moved["silent_closed"], 4),
            "mouth_corr_change": round(moved["mouth_corr"] - still["mouth_corr"], 4),
            "silent_closed_change": round(moved["silent_closed"] - still["silent_closed"], 4),
            "gap_slope": gap_slope(gap, neutral_gap)}


def contact_sheet(path: str, names: list[str], truth: dict, generated: dict, tile: int = 192) -> None:
    """PNG: one row per emotion, the truth at 0, 0.5 and 1.0 then the speaker's frames at the same
    intensities (``truth``/``generated``: {(name, intensity): (H, W, 3) uint8})."""
    from PIL import Image, ImageDraw

    levels = (0.0, 0.5, 1.0)
    head = 22
    sheet = Image.new("RGB", (tile * 2 * len(levels), head + tile * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (kind, frames) in enumerate([("truth", truth), ("speaker", generated)]):
        for j, level in enumerate(levels):
            x = (c * len(levels) + j) * tile
            draw.text((x + 6, 5), f"{kind} {level:g}", fill="black")
            for r, name in enumerate(names):
                img = Image.fromarray(frames[name, level]).resize((tile, tile), Image.BICUBIC)
                sheet.paste(img, (x, head + r * tile))
                if j == 0:
                    draw.text((x + 6, head + r * tile + 4), name, fill="white")
    sheet.save(path)


def change(features: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-frame change of each feature and its standard error."""
    d = features - base
    ok = np.isfinite(d)
    mean = np.array([d[ok[:, j], j].mean() for j in range(d.shape[1])])
    se = np.array([d[ok[:, j], j].std() / np.sqrt(max(ok[:, j].sum(), 1)) for j in range(d.shape[1])])
    return mean, se


def ratios(changes: np.ndarray, truth: np.ndarray, counted: np.ndarray) -> list:
    """change ÷ the truth's change on the counted features (None elsewhere)."""
    return [round(float(c / t), 3) if m else None for c, t, m in zip(changes, truth, counted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker (default: the bundled speaker)")
    parser.add_argument("--data", default="runs/bundled/heldout-espeak", help="held-out prepared clips with truth")
    parser.add_argument("--train-data", default="runs/bundled/voices",
                        help="the speaker's training clips (latents, truth) the latent directions reported beside the "
                             "speaker are fitted to; none: no directions")
    parser.add_argument("--out", default="bench/results/emotion.json")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clip", type=int, default=0, help="which held-out clip")
    parser.add_argument("--intensities", type=float, nargs="+", default=INTENSITIES,
                        help="intensities to measure (0.5 and 1 always are: the monotony)")
    parser.add_argument("--decoder", choices=DECODERS,
                        help="which decoder renders (default: the speaker's default), at its default steps")
    parser.add_argument("--pose", choices=("predicted", "clip"), default="predicted",
                        help="the speaker's head motion: its own from the speech, or the held-out clip's (its "
                             "estimated poses, pose.npy), so that the speaker's head is where the truth's is")
    parser.add_argument("--sheet", help="also write a contact sheet (PNG): each emotion at 0, 0.5 and 1.0, truth "
                                        "and speaker, on the middle frame at the speaker's output size")
    args = parser.parse_args(argv)
    intensities = sorted(set(args.intensities) | {0.5, 1.0})

    from talker import DAETalkerPipeline
    from talker.cli import bundled_speaker
    from talker.evaluation.metrics import FaceProbe, closed_share, closed_threshold, gap_slope, lipsync_scores
    from talker.hub import read_speaker
    from talker.pipelines.images import postprocess_frames
    from talker.training.data import load_dataset
    from talker.training.distill import frames_to_x0
    from talker.training.emotion import fit_emotion_directions

    model = args.model or bundled_speaker()
    pipe = DAETalkerPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    names = list(pipe.emotion_names)
    decoder = args.decoder or pipe.default_decoder
    index, clips = load_dataset(args.data)
    clip = clips[args.clip]
    crop = next(e["crop"] for e in index["clips"] if e["id"] == clip.id)
    truth = dict(np.load(clip.path / "truth.npz"))
    n = min(clip.n_frames, int(args.seconds * 25))
    audio = clip.audio[: n * 640]
    probe = FaceProbe()
    res = pipe.resolution

    head = {"pose_mode": "reference", "pose": clip.pose[:n]} if args.pose == "clip" else {}

    def generate(emotion):
        return pipe(audio, sampling_rate=16000, generator=torch.Generator().manual_seed(0), emotion=emotion,
                    decoder=decoder, **head)

    settings = {f"{name}@{i:g}": np.eye(len(names))[k] * i for k, name in enumerate(names) for i in intensities}
    settings[f"{names[0]}@0.5+{names[3]}@0.5"] = np.eye(len(names))[0] * 0.5 + np.eye(len(names))[3] * 0.5
    # the truth is read at the size the speaker's frames come in (the refiner's), as they are: the
    # probe reads sharp shut lips at 256² as more open than the same lips at 64²; the decoder's
    # size is what the encoder takes
    size = pipe.output_resolution()
    neutral_frames, neutral_big = render_truth(truth, np.zeros(len(names)), range(n), crop, res, size)
    neutral_truth = probe.features(neutral_big)
    neutral_big_marks = probe.landmarks(neutral_big) if pipe.expression is not None else None
    neutral_geometry = truth_geometry(truth, np.zeros(len(names)), range(n))
    neutral = generate([0.0] * len(names))
    middle = n // 2  # the contact sheet's frame
    sheet_truth, sheet_generated = {}, {}
    neutral_marks = probe.landmarks(neutral.frames)
    neutral_gen = landmark_features(neutral_marks)
    s2l = pipe.speech_to_latent
    if s2l.config.get("emotion_directions"):  # the speaker's own (talker add-emotion), as it records them
        def offset_of(e):
            with torch.inference_mode():
                return s2l.emotion_offset(torch.from_numpy(e).to(s2l.device)).float().cpu()
        fit = read_speaker(Path(model)).get("emotion", {}) if Path(model).is_dir() else {}
    elif args.train_data != "none":
        directions, fit = fit_emotion_directions(args.train_data, len(names))

        def offset_of(e):
            return torch.from_numpy(e).float() @ torch.from_numpy(directions)
    else:  # no latent directions to report beside the warp
        offset_of, fit = None, None
    results = {"command": "python bench/emotion.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": str(model), "clip": clip.id, "frames": n, "truth_size": size, "features": FEATURES,
               "emotion_mode": "directions" if s2l.config.get("emotion_directions") else "network",
               "decoder": decoder, "steps": pipe.default_steps(decoder), "pose": args.pose,
               "decoder_emotion_input": bool(getattr(pipe.decoder_for(decoder)[0], "takes_emotion", False)),
               "expression_warp": pipe.expression is not None,
               "directions_fit": fit,
               "speaker_emotion": read_speaker(Path(model)).get("emotion") if Path(model).is_dir() else None,
               "settings": {}}
    sync_neutral = lipsync_scores(neutral_gen[:, 0], neutral_truth[:, 0], truth, n)
    results["lipsync_neutral"] = {k: round(sync_neutral[k], 4) for k in ("mouth_corr", "silent_closed",
                                                                         "mouth_corr_truth_frames",
                                                                         "silent_closed_truth_frames")}
    x_T = neutral.fixed_noise
    ae = pipe.autoencoder_for(decoder)

    takes_emotion = getattr(ae.unet, "takes_emotion", False) or pipe.expression is not None

    def decode(z, emotion=None):
        """z_sem (and intensities, for a decoder that takes them or an expression warp) → the frames
        the speaker shows for them (decoder at its default steps, refiner, expression warp), as
        the pipeline's decode_latents makes them."""
        e = None if emotion is None else torch.from_numpy(emotion).float()[None]
        with torch.inference_mode():
            decoded = ae.decode(z, x_T, pipe.default_steps(decoder), batch_size=16, output_type="pt", emotion=e) * 2 - 1
            images = pipe.refine_frames(decoded) if pipe.refiner is not None else decoded
            images = pipe.express_frames(decoded, e, onto=images).add(1).div(2)
        return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    def encode(frames):
        with torch.inference_mode():
            return ae.encode(frames)

    def warp_gap(small, big, e):
        """The lip gap of the truth's ``big`` frames moved by the warp at intensities ``e`` (fields
        read off ``small``, the truth's frame at the decoder's side, as the pipeline reads them off
        its refined frame brought down to that side)."""
        with torch.inference_mode():
            moved = pipe.expression(frames_to_x0(small), torch.from_numpy(e).float()[None], onto=frames_to_x0(big))
        return probe.features(postprocess_frames(moved, "np"))[:, 0]

    def closed(gap, threshold, silent):
        return round(closed_share(gap, threshold, silent), 4)

    neutral_poses = np.asarray(neutral.poses)[:n]
    posed_neutral = {}  # the truth's neutral frames at a pose sequence, and their features: the same for every emotion

    def neutral_at(poses):
        key = poses.tobytes()
        if key not in posed_neutral:
            small, big = render_truth(dict(truth, pose=poses), np.zeros(len(names)), range(n), crop, res, size)
            posed_neutral[key] = small, big, probe.features(big)
        return posed_neutral[key]

    def truth_at(poses, e):
        """The probe's features of the truth rendered at ``poses`` (the speaker's own) with intensities ``e``."""
        return probe.features(render_truth(dict(truth, pose=poses), e, range(n), crop, size)[0])

    def at_pose(poses, e, posed, gap, gap_neutral, silent):
        """The pauses read with the truth rendered at the speaker's own head poses (its mouth, blinks
        and emotion; the speaker's yaw, pitch and roll), so that the head's pose is no difference:
        the threshold from those frames, the share of the speaker's pauses under it (and of its
        neutral pauses under neutral's threshold from the truth at its neutral poses), and the pause
        gaps of those truth frames with and without the emotion and with the warp (``posed``: the
        probe's features of the truth at ``poses`` with the emotion, :func:`truth_at`)."""
        base_small, base_big, base_feats = neutral_at(poses)
        gaps = {"pause_gap_truth_frames": posed[:, 0], "pause_gap_neutral_truth_frames": base_feats[:, 0]}
        if pipe.expression is not None:
            gaps["pause_gap_warp_on_truth"] = warp_gap(base_small, base_big, e)
        threshold = closed_threshold(gaps["pause_gap_truth_frames"], truth["mouth_open"][:n])
        neutral_threshold = closed_threshold(neutral_at(neutral_poses)[2][:, 0], truth["mouth_open"][:n])
        row = {"closed_threshold": round(threshold, 4), "silent_closed": closed(gap, threshold, silent),
               "neutral_closed_threshold": round(neutral_threshold, 4),
               "silent_closed_neutral": closed(gap_neutral, neutral_threshold, silent)}
        for k, v in gaps.items():
            row[k] = round(float(np.nanmean(v[silent])), 4)
            if k != "pause_gap_neutral_truth_frames":
                row["silent_closed" + k.removeprefix("pause_gap")] = closed(v, threshold, silent)
        return row

    z_neutral_truth = encode(neutral_frames)
    reconstructed_neutral = probe.features(decode(z_neutral_truth))
    for name, e in settings.items():
        truth_frames, truth_big = render_truth(truth, e, range(n), crop, res, size)
        t_feats = probe.features(truth_big)
        t_change, t_se = change(t_feats, neutral_truth)
        out = generate(e.tolist())
        g_feats = probe.features(out.frames)
        name_, _, level = name.partition("@")
        if level in ("0.5", "1"):
            sheet_generated[name_, float(level)] = out.frames[middle]
            sheet_truth[name_, float(level)] = truth_big[middle]
        g_change, g_se = change(g_feats, neutral_gen)
        moved = np.abs(t_change) > 3 * (t_se + g_se)  # more than the probe can tell on either side
        row = {"truth_change": t_change.round(4).tolist(), "generated_change": g_change.round(4).tolist(),
               "counted": moved.tolist(),
               "ratio": ratios(g_change, t_change, moved)}
        # what the face itself did, off the renderer's landmarks: a feature the probe reads as moved
        # may be one the face never moved (the face mesh fits a whole face, so a lowered brow can
        # read as parted lips), or moved the other way
        geo, _ = change(truth_geometry(truth, e, range(n)), neutral_geometry)
        by_face = moved & (np.sign(geo) == np.sign(t_change)) & (np.abs(geo) > 3 * (t_se + g_se))
        row["truth_geometric_change"] = geo.round(4).tolist()
        row["counted_by_face"] = by_face.tolist()
        row["truth_probe_over_geometry"] = [round(float(t / d), 3) if m and abs(d) > 1e-6 else None
                                            for t, d, m in zip(t_change, geo, moved)]
        if pipe.expression is not None:  # and what the warp did to the speaker's face, off the same points
            w_rows = warp_geometry(pipe, neutral.frames, neutral_marks, e)
            w_change = np.nanmean(w_rows, 0)
            row["warp_geometric_change"] = w_change.round(4).tolist()
            row["warp_geometric_ratio"] = ratios(w_change, geo, np.abs(geo) >= GEOMETRY_FLOOR)
            # against the face's move as its frames show it, read as the warp's is (visible_geometry)
            shown = np.nanmean(visible_geometry(truth, e, range(n), crop, size, neutral_big_marks), 0)
            row["truth_visible_change"] = shown.round(4).tolist()
            row["warp_visible_ratio"] = ratios(w_change, shown, np.abs(geo) >= GEOMETRY_FLOOR)
        posed = None
        if level in ("0.5", "1"):
            # the truth at the speaker's own head poses (its mouth, blinks and emotion): the probe reads a
            # brow or a lip differently as the head turns and nods, and the speaker's head is not where
            # the truth's is; its change against the truth's neutral frames at the speaker's neutral poses
            posed = truth_at(np.asarray(out.poses)[:n], e)
            p_change, p_se = change(posed, neutral_at(neutral_poses)[2])
            p_moved = np.abs(p_change) > 3 * (p_se + g_se)
            row["truth_change_at_speaker_pose"] = p_change.round(4).tolist()
            row["counted_at_speaker_pose"] = p_moved.tolist()
            row["ratio_at_speaker_pose"] = ratios(g_change, p_change, p_moved)
        if offset_of is not None:  # what the latent space can show: the neutral latents moved along the emotion's direction
            z = torch.from_numpy(neutral.latents) + offset_of(e)
            a_change, _ = change(probe.features(decode(z)), neutral_gen)
            row["direction_change"] = a_change.round(4).tolist()
            row["direction_ratio"] = ratios(a_change, t_change, moved)
        # the ceiling: the truth's own frames through the encoder and decoder
        z_truth = encode(truth_frames)
        r_change, _ = change(probe.features(decode(z_truth)), reconstructed_neutral)
        row["reconstruction_change"] = r_change.round(4).tolist()
        row["reconstruction_ratio"] = ratios(r_change, t_change, moved)
        if takes_emotion:  # the same with the intensities given to the decoder or the warp too
            i_change, _ = change(probe.features(decode(z_truth, e)), reconstructed_neutral)
            row["reconstruction_with_input_change"] = i_change.round(4).tolist()
            row["reconstruction_with_input_ratio"] = ratios(i_change, t_change, moved)
        if name.endswith("@1"):
            sync = lipsync_scores(g_feats[:, 0], t_feats[:, 0], truth, n)  # closed: under this emotion's truth
            row["lipsync"] = {k: round(sync[k], 4) for k in ("mouth_corr", "silent_closed", "mouth_corr_truth_frames",
                                                               "silent_closed_truth_frames")}
            by_neutral = lipsync_scores(g_feats[:, 0], neutral_truth[:, 0], truth, n)
            row["lipsync"]["silent_closed_neutral_threshold"] = round(by_neutral["silent_closed"], 4)
            row["lipsync"]["silent_closed_truth_frames_neutral_threshold"] = round(
                lipsync_scores(t_feats[:, 0], neutral_truth[:, 0], truth, n)["silent_closed"], 4)
            # how the emotion reshapes the opening: the slope of its lip gap on neutral's, frame by
            # frame (the same speech; 1: the opening moves as before, under 1: flattened)
            row["lipsync"]["gap_slope"] = gap_slope(g_feats[:, 0], neutral_gen[:, 0])
            row["lipsync"]["gap_slope_truth_frames"] = gap_slope(t_feats[:, 0], neutral_truth[:, 0])
            if pipe.expression is not None:  # the warp's own move of the lips, no probe on the moved frames
                row["lipsync_by_geometry"] = geometric_lipsync(neutral_gen[:, 0] + w_rows[:, 0], neutral_gen[:, 0],
                                                               neutral_truth[:, 0], truth, n)
            # how far from shut the pauses' lips are, against the threshold that counts them closed:
            # the speaker's, the truth's, and the warp's move on the truth's own neutral frames
            silent = ~truth["speaking"][:n].astype(bool)
            if silent.any():
                pause = {"pause_gap": g_feats[:, 0], "pause_gap_truth_frames": t_feats[:, 0],
                         "pause_gap_neutral": neutral_gen[:, 0], "pause_gap_neutral_truth_frames": neutral_truth[:, 0]}
                if pipe.expression is not None:
                    pause["pause_gap_warp_on_truth"] = warp_gap(neutral_frames, neutral_big, e)
                row["lipsync"] |= {k: round(float(np.nanmean(v[silent])), 4) for k, v in pause.items()}
                row["lipsync"]["closed_threshold"] = round(sync["closed_threshold"], 4)
                row["lipsync"]["at_speaker_pose"] = at_pose(np.asarray(out.poses)[:n], e, posed, g_feats[:, 0],
                                                            neutral_gen[:, 0], silent)
            if offset_of is not None:
                k = names.index(name.split("@")[0])
                dz = torch.from_numpy((out.latents - neutral.latents).mean(0)).float()
                w = offset_of(np.eye(len(names))[k])  # the direction of the emotion at 1.0
                along = float(dz @ w / (w @ w))
                row["latent_along_direction"] = round(along, 3)
                row["latent_off_direction"] = round(float((dz - along * w).norm() / w.norm()), 3)
                # the encoder's own view: the truth's frames with the emotion against without, in z_sem
                dz_truth = (z_truth - z_neutral_truth).float().mean(0)
                row["truth_latent_along_direction"] = round(float(dz_truth @ w / (w @ w)), 3)
                row["truth_latent_change_over_direction"] = round(float(dz_truth.norm() / w.norm()), 3)
        results["settings"][name] = row
        print(name, json.dumps(row), flush=True)
    for name in names:  # monotony: the change at 0.5 ÷ at 1.0, on the counted features, the speaker's and the truth's
        full, half = results["settings"][f"{name}@1"], results["settings"][f"{name}@0.5"]
        for key, which in (("half_over_full", "generated_change"), ("truth_half_over_full", "truth_change"),
                           ("truth_geometric_half_over_full", "truth_geometric_change")):
            full[key] = [round(h / f, 3) if m and abs(f) > 1e-6 else None
                         for h, f, m in zip(half[which], full[which], full["counted"])]
    write_results(args.out, results)
    if args.sheet:
        for name in names:
            sheet_generated[name, 0.0] = neutral.frames[middle]
            sheet_truth[name, 0.0] = neutral_big[middle]
        contact_sheet(args.sheet, names, sheet_truth, sheet_generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
