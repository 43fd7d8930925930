"""The expression warp on held-out paired takes: how far it moves the truth's own neutral frames,
against how far the emotional take of the same line moves them.

    python bench/emotion_takes.py --out bench/results/emotion_takes.json [--model checkpoints/astronaut-64] \
        [--neutral runs/bundled/takes256-none] [--data runs/bundled/takes256-happy ...] [--size 64] \
        [--read-from decoder] [--apply-to refined]

The takes that ``talker add-emotion --method warp`` holds out (every tenth line) are paired as it
pairs them (time by DTW of the speech, picture by the neutral take's crop); the neutral frames are
warped to each emotional frame's intensities, as the pipeline warps: the fields read off the
decoder-size frame, the move applied to the frame at the speaker's output size (its refiner's;
the takes' kept crops, ``talker prepare --refiner-resolution``, scaled to it; ``--size`` to choose,
e.g. the decoder's, where the probe reads every move smaller); ``--read-from decoder`` reads the
fields off the speaker's decoder's rendering of the neutral frames (encoded and decoded), as the
pipeline reads them off its own frames, not off the takes' (the takes' frames brought to where the
rendering has the face, an affine found by ECC: the decoder renders a take's face up to a pixel or
a degree off, about as far as a brow moves); ``--apply-to refined`` applies the move
to the speaker's refiner's rendering of the neutral takes' decoder-size frames instead of their
kept crops (the changes are then taken from that rendering, so the truth's includes the refiner's
error: read the slopes, not the ratios). All three sets are read by the same
MediaPipe face mesh as ``bench/emotion.py``'s (lip gap, mouth-corner lift, mouth width, brow
height, eye opening, ÷ the eye-corner distance); the ratio is (warped − neutral) ÷ (emotional −
neutral), feature by feature, averaged over the emotion's frames, for the features whose truth
change is more than 3 × its standard error, and ``half_over_full`` the warp's change at half the
intensities over its change at full (the issue's bar: 0.4–0.6); ``gap_slope`` and ``gap_slope_truth`` are the slopes of
the warped and the emotional frames' lip gap on the neutral ones', frame by frame (under 1: the
opening flattened). This is the warp alone, on the frames it was trained for, with neither
speech2latent nor the decoder in the way: where ``bench/emotion.py`` finds the speaker's move short
and this finds the warp's own move short, the warp is what falls short.

Where the takes are synthetic (``talker synth``'s truth beside each clip), the warp's move is also
read without a probe (``geometry``): the renderer's own points of each neutral frame (numbered as
the face mesh numbers them), carried where the warp's flow takes the pixel under each
(``bench/emotion.py``'s ``follow``), against the same points of the emotional frame, on the
held-out lines (``held_out``) and as many frames of the lines it was trained on (``trained``): the
warp's change ÷ the face's, at 1.0 and 0.5, on each feature the face moves by at least
``GEOMETRY_FLOOR``, and ÷ the face's change as its frames show it (``ratio_to_visible``: the same
points carried by the face's own move, ``visible_change``; surprise raises the lids' landmarks
past the irises' tops, behind nearer parts of the face). Where the takes kept sharper crops, ``pixel_error`` holds the pairs' squared
error (on what the emotional take's crop covers) of the neutral frame as it is, moved by the warp,
by its flow alone and by its colour residual alone (``warp_flow_only``, ``warp_colour_only``: how
much of the move each carries), and moved by the face's own move (``face_move``: the renderer's
map of each triangle its emotional frame shows onto itself in the neutral one, no colour residual): under the warp's, the loss the warp learns by
would take the face's whole move if the warp drew it. And ``pixel_error_by_flow_scale``: the
held-out pairs' error (the same pixels; plain, and weighted as training weighs where the face
moves) with the warp's flow scaled by 0.8–1.3 and its colour residual as it is: least near 1,
the warp's flow is not the face's move made smaller but another shape, which scaled up moves
the wrong pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from emotion import GEOMETRY_FLOOR, SYNTH_SIDE, face_move, follow
from talker.defaults import EMOTION_WARP, EXPRESSION_READ_FROM
from talker.evaluation.metrics import PROBE_FEATURES as FEATURES
from talker.evaluation.results import write_results

TAKES = tuple(f"runs/bundled/takes256-{name}" for name in ("happy", "sad", "angry", "surprised"))
FLOW_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


def warp_points(face, truth: dict, frame: int, emotion: np.ndarray) -> np.ndarray:
    """(P, 2) where the renderer puts every warp point of its photo (photo pixels; the first
    :data:`~talker.evaluation.metrics.MESH_POINTS` numbered as the face mesh numbers them) for the
    take's face state at ``frame`` with ``emotion``."""
    from talker.data.face import FaceState

    return face.landmarks(FaceState.from_truth(truth, frame, emotion))[0][:, :2]


def drawn_points(face, truth: dict, frames, emotion: np.ndarray, crop) -> np.ndarray:
    """(N, 468, 2) the renderer's face-mesh points for the take's states at ``frames`` with
    ``emotion`` (N, E), as fractions of the square ``crop`` (x0, y0, side; the take's pixels)."""
    from talker.evaluation.metrics import MESH_POINTS

    x0, y0, side = crop
    points = [(warp_points(face, truth, k, e)[:MESH_POINTS] - face.offset) * face.scale for k, e in zip(frames, emotion)]
    return (np.stack(points) - [x0, y0]) / side


def takes_geometry(pipe, takes: dict, ids, k: int, frames: int, size: int) -> dict | None:
    """How far the warp moves the renderer's points of the neutral takes of lines ``ids`` to
    emotion ``k`` (the fields read off the take's frame at the warp's read side, the flow at ``size``), against the
    emotional takes' own points (``frames`` pairs, evenly spread); None where the takes carry no
    synthetic truth or show no emotion ``k``."""
    from talker.data.face import FaceState, SyntheticFace
    from talker.evaluation.metrics import landmark_features
    from talker.training.distill import frames_to_x0
    from talker.models.expression import apply_move
    from talker.training.expression import coverage_mask, covered, dtw_path, frame_features, reframe, sharp_frames

    face, rows = SyntheticFace(SYNTH_SIDE), []
    for ref in (c for c in takes["neutral"] if c.id in ids):
        for clip in (c for c in takes["emotional"]
                     if c.id == ref.id and c.emotion is not None and (c.emotion[:, k] > 0).any()):
            if not (ref.path / "truth.npz").exists() or not (clip.path / "truth.npz").exists():
                return None
            i, j = map(np.array, zip(*dtw_path(frame_features(ref), frame_features(clip))))
            j = np.minimum(j, len(clip.emotion) - 1)
            keep = clip.emotion[j, k] > 0
            if keep.any():
                rows.append((ref, clip, i[keep], j[keep]))
    if not rows:
        return None
    per = max(1, frames // len(rows))
    face_change, visible, moved = [], [], {1.0: [], 0.5: []}
    kept = takes["kept"] if size != pipe.resolution else None
    # the pairs' squared error on what each crop covers
    errors = {"neutral": [], "warp": [], "warp_flow_only": [], "warp_colour_only": [], "face_move": []}
    for ref, clip, i, j in rows:
        pick = np.linspace(0, len(i) - 1, min(per, len(i))).round().astype(int)
        i, j = i[pick], j[pick]
        truth_n, truth_e = dict(np.load(ref.path / "truth.npz")), dict(np.load(clip.path / "truth.npz"))
        crop = takes["crops"][id(ref)]
        e = truth_e["emotion"][j]
        neutral = drawn_points(face, truth_n, i, np.zeros_like(e), crop)
        base = landmark_features(neutral)
        face_change.append(landmark_features(drawn_points(face, truth_e, j, e, crop)) - base)
        read = frames_to_x0(ref.frames[i] if pipe.expression.read_side == pipe.resolution
                            else sharp_frames(ref, takes["kept"], pipe.expression.read_side)[i])
        for scale in moved:
            with torch.inference_mode():
                flow, _ = pipe.expression.move_at(read, torch.from_numpy(e * scale).float(), (size, size))
            moved[scale].append(landmark_features(follow(neutral, flow)) - base)
        own = torch.from_numpy(np.stack([face_move(face, FaceState.from_truth(truth_n, a, np.zeros_like(e[0])),
                                                   FaceState.from_truth(truth_e, b, e[n]), crop, size)
                                         for n, (a, b) in enumerate(zip(i, j))])).permute(0, 3, 1, 2)
        visible.append(landmark_features(follow(neutral, own)) - base)  # the points carried as the warp's are
        if kept:
            onto = frames_to_x0(sharp_frames(ref, kept, size)[i])
            target = frames_to_x0(reframe(sharp_frames(clip, kept, size)[j], takes["crops"][id(clip)], crop))
            mask = coverage_mask(torch.from_numpy(covered(takes["crops"][id(clip)], crop))[None], size)
            with torch.inference_mode():
                flow, residual = pipe.expression.move_at(read, torch.from_numpy(e).float(), onto.shape[-2:])
                shown = {"neutral": onto, "warp": apply_move(onto, flow, residual),
                         "warp_flow_only": apply_move(onto, flow, torch.zeros_like(onto)),
                         "warp_colour_only": onto + residual,
                         "face_move": apply_move(onto, own, torch.zeros_like(onto))}
            for key, out in shown.items():
                errors[key].append(((out - target).pow(2).mean(1) * mask).sum((1, 2)) / mask.sum())
    face_mean = np.nanmean(np.concatenate(face_change), 0)
    full, half = (np.nanmean(np.concatenate(moved[s]), 0) for s in (1.0, 0.5))
    counted = np.abs(face_mean) >= GEOMETRY_FLOOR
    out = {"frames": int(sum(len(c) for c in face_change)), "face_change": face_mean.round(4).tolist(),
           "warp_change": full.round(4).tolist(),
           "ratio": [round(float(w / f), 3) if c else None for w, f, c in zip(full, face_mean, counted)],
           "half_over_full": [round(float(h / w), 3) if c else None for h, w, c in zip(half, full, counted)]}
    seen = np.nanmean(np.concatenate(visible), 0)
    out["visible_change"] = seen.round(4).tolist()
    out["ratio_to_visible"] = [round(float(w / v), 3) if c else None for w, v, c in zip(full, seen, counted)]
    if kept:
        out["pixel_error"] = {key: round(float(torch.cat(v).mean()), 6) for key, v in errors.items()}
    return out


def flow_scale_errors(pipe, pairs: dict, shown: tuple[str, str], read: str) -> dict:
    """The pairs' error with the warp's flow × each of :data:`FLOW_SCALES` (the residual as it is),
    on what each emotional take's own crop covers: {"mean_squared": [...], "weighted": [...]}
    (weighted as training weighs where the face moves)."""
    from talker.models.expression import apply_move
    from talker.training.distill import frames_to_x0, motion_weights
    from talker.training.expression import coverage_mask

    weights = motion_weights(pairs[shown[0]], EMOTION_WARP["motion_weight"])
    flat, weighted = np.zeros(len(FLOW_SCALES)), np.zeros(len(FLOW_SCALES))
    for s in range(0, len(pairs["emotion"]), 64):
        onto = frames_to_x0(pairs[shown[0]][s : s + 64])
        target = frames_to_x0(pairs[shown[1]][s : s + 64])
        with torch.inference_mode():
            flow, residual = pipe.expression.move_at(frames_to_x0(pairs[read][s : s + 64]),
                                                     pairs["emotion"][s : s + 64], onto.shape[-2:])
            seen = coverage_mask(pairs["covered"][s : s + 64], onto.shape[-1])
            for n, scale in enumerate(FLOW_SCALES):
                error = (apply_move(onto, flow * scale, residual) - target).pow(2).mean(1) * seen
                flat[n] += float((error.sum((1, 2)) / seen.sum((1, 2))).sum())
                weighted[n] += float(((error * weights).sum((1, 2)) / seen.sum((1, 2))).sum())
    count = len(pairs["emotion"])
    return {"scales": list(FLOW_SCALES), "mean_squared": (flat / count).round(6).tolist(),
            "weighted": (weighted / count).round(6).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker with an expression warp (default: the bundled speaker)")
    parser.add_argument("--neutral", default="runs/bundled/takes256-none", help="the neutral takes (prepared)")
    parser.add_argument("--data", nargs="+", default=list(TAKES), help="the emotional takes (prepared)")
    parser.add_argument("--frames", type=int, default=200, help="frames per emotion (evenly spread)")
    parser.add_argument("--size", type=int, help="side the frames are read at (default: the speaker's output side)")
    parser.add_argument("--read-from", choices=EXPRESSION_READ_FROM, default="takes",
                        help="the frames the fields are read off: the takes' own, the decoder's rendering of "
                             "them, or that through the refiner scaled back down (as the pipeline reads them)")
    parser.add_argument("--apply-to", choices=("takes", "refined"), default="takes",
                        help="the frames the move is applied to: the takes' kept crops or the refiner's rendering")
    parser.add_argument("--geometry-frames", type=int, default=200,
                        help="pairs per emotion read by the renderer's own points, held out and trained on alike")
    parser.add_argument("--out", default="bench/results/emotion_takes.json")
    args = parser.parse_args(argv)

    from talker import DAETalkerPipeline
    from talker.cli import bundled_speaker
    from talker.evaluation.metrics import FaceProbe, gap_slope
    from talker.hub import read_speaker
    from talker.pipelines.images import postprocess_frames
    from talker.training.data import split_clips
    from talker.training.distill import frames_to_x0
    from talker.training.expression import decoded_takes, load_takes, paired_frames

    model = args.model or bundled_speaker()
    pipe = DAETalkerPipeline.from_pretrained(model)
    if pipe.expression is None:
        raise SystemExit(f"{model} has no expression warp (talker add-emotion --method warp)")
    names = list(pipe.emotion_names)
    takes = load_takes(args.neutral, args.data)
    trained, held = map(set, split_clips(takes["ids"]))
    size = args.size or pipe.output_resolution()
    source = takes["kept"]
    if size != pipe.resolution and not (source and source >= size):
        raise SystemExit(f"the takes kept no crops at {size}² or more (talker prepare --refiner-resolution)")
    sharp = (source, size) if size != pipe.resolution else None
    neutral = [c for c in takes["neutral"] if c.id in held]
    read = decoded_takes(pipe, neutral, refined=args.read_from == "refined") if args.read_from != "takes" else None
    pairs = paired_frames(neutral, [c for c in takes["emotional"] if c.id in held], len(names), takes["crops"], sharp,
                          read)
    if args.apply_to == "refined":
        if pipe.refiner is None or size != pipe.output_resolution():
            raise SystemExit("--apply-to refined needs a speaker with a refiner, read at its output side")
        with torch.inference_mode():
            refined = [pipe.refine_frames(frames_to_x0(pairs["neutral"][s : s + 128]))
                       for s in range(0, len(pairs["neutral"]), 128)]
        pairs["neutral_sharp"] = postprocess_frames(torch.cat(refined), "np")
    shown = ("neutral_sharp", "emotional_sharp") if sharp else ("neutral", "emotional")
    # the frames the warp reads: the decoder-size ones, or the sharp ones for a warp that reads a larger side
    readable = "neutral_read" if read else "neutral" if pipe.expression.read_side == pipe.resolution else shown[0]
    probe = FaceProbe()
    results = {"command": "python bench/emotion_takes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "model": str(model), "neutral": args.neutral, "data": args.data, "held_out_lines": sorted(held),
               "size": size, "read_from": args.read_from, "apply_to": args.apply_to,
               "expression": read_speaker(Path(model)).get("emotion") if Path(model).is_dir() else None,
               "features": FEATURES, "emotions": {}}
    for k, name in enumerate(names):
        rows = np.flatnonzero(pairs["emotion"][:, k].numpy() > 0)
        if not len(rows):
            continue
        rows = rows[np.linspace(0, len(rows) - 1, min(args.frames, len(rows))).round().astype(int)]
        def warp(scale: float) -> np.ndarray:
            with torch.inference_mode():
                out = pipe.expression(frames_to_x0(pairs[readable][rows]),
                                      pairs["emotion"][rows] * scale, onto=frames_to_x0(pairs[shown[0]][rows]))
            return probe.features(postprocess_frames(out, "np"))

        f_n, f_e = (probe.features(pairs[key][rows]) for key in shown)
        f_w, f_half = warp(1.0), warp(0.5)
        ok = ~(np.isnan(f_n).any(1) | np.isnan(f_e).any(1) | np.isnan(f_w).any(1) | np.isnan(f_half).any(1))
        d_truth, d_warp = f_e[ok] - f_n[ok], f_w[ok] - f_n[ok]
        d_half = (f_half[ok] - f_n[ok]).mean(0)
        t, se = d_truth.mean(0), d_truth.std(0) / np.sqrt(ok.sum())
        counted = np.abs(t) > 3 * se
        ratio = [round(float(w / tt), 3) if c else None for w, tt, c in zip(d_warp.mean(0), t, counted)]
        results["emotions"][name] = {"frames": int(ok.sum()), "truth_change": t.round(4).tolist(),
                                     "warped_change": d_warp.mean(0).round(4).tolist(),
                                     "counted": counted.tolist(), "ratio": ratio,
                                     "half_over_full": [round(float(h / w), 3) if c else None
                                                        for h, w, c in zip(d_half, d_warp.mean(0), counted)],
                                     "gap_slope": gap_slope(f_w[ok, 0], f_n[ok, 0]),
                                     "gap_slope_truth": gap_slope(f_e[ok, 0], f_n[ok, 0])}
        if args.read_from == "takes" and args.apply_to == "takes":  # the flow as it was trained
            geometry = {part: takes_geometry(pipe, takes, ids, k, args.geometry_frames, size)
                        for part, ids in (("held_out", held), ("trained", trained))}
            if geometry["held_out"] is not None:
                results["emotions"][name]["geometry"] = geometry
        print(name, json.dumps(results["emotions"][name]), flush=True)
    if args.apply_to == "takes":
        results["pixel_error_by_flow_scale"] = flow_scale_errors(pipe, pairs, shown, readable)
        print("pixel error by flow scale", json.dumps(results["pixel_error_by_flow_scale"]), flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
