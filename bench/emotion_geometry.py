"""How far each speaker's expression warp moves the face, against how far the face itself moves.

    python bench/emotion_geometry.py --models checkpoints/astronaut-64 runs/other/speaker \
        --out bench/results/emotion_geometry.json [--data runs/bundled/heldout-espeak] [--clips 0 1 2 3] [--seconds 4] \
        [--truth-pose speaker|clip]

On each held-out clip: the speaker's neutral frames from the clip's speech (seed 0, its own head
motion), the points MediaPipe's face mesh finds on them carried by the warp's flow at each emotion
at 0.5 and 1.0 (``bench/emotion.py``'s ``warp_geometry``), against the face's own move of the clip's
face states to that emotion, read the same way: the points MediaPipe finds on the renderer's frames
without it (cut as the clip was, at the speaker's side) carried by that move (``visible_geometry``),
so that a point the move takes behind a nearer part of the face (a lid raised past the iris's top)
counts where the frame shows it, as the warp's points do. The face's states are rendered with the
speaker's own head poses (``--truth-pose speaker``, the default), so that both sides are read at the
same pose: read at the clip's own poses (``--truth-pose clip``), surprise's brows show half to three
quarters of the landmarks' raise as the head turns one way or the other, where the warp's move, read
at the speaker's poses, stays near two thirds. Beside it, ``ratio_to_landmarks``: against the
renderer's landmarks themselves (``truth_geometry``), which put surprise's lids half as far again as
its frames show them. No probe reads a moved frame, so a feature the face mesh reads through another
(a raised brow read as a narrower mouth) or cannot see (a lid raised two pixels) does not come into
it, and one clip's figure is near every other's: a few seconds of a few clips tell warps apart in
minutes, where ``bench/emotion.py`` takes five per clip for one.

For each model, each feature the face's landmarks move by at least ``GEOMETRY_FLOOR`` at 1.0: the
warp's change ÷ the face's (bar 0.8–1.2) and its change at 0.5 ÷ at 1.0 (bar 0.4–0.6), per clip, with the
count of each bar met. What the warp's colour residual draws is not a move and is not read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from emotion import GEOMETRY_FLOOR, render_truth, truth_geometry, visible_geometry, warp_geometry
from emotion_summary import HALF_BAR, RATIO_BAR
from talker.evaluation.metrics import PROBE_FEATURES as FEATURES
from talker.evaluation.results import write_results


def geometry_rows(face: dict[str, np.ndarray], warp: dict[str, np.ndarray],
                  landmarks: dict[str, np.ndarray] | None = None) -> dict:
    """{"name@level": mean change (5,)} of the face and of the warp, at 0.5 and 1.0 for each emotion
    → {emotion: {feature: {"ratio", "half_over_full"}}} on the features the face moves by at least
    GEOMETRY_FLOOR at 1.0; with ``landmarks`` (the face's change read off its landmarks), on those
    that they move by that much, each row with ``ratio_to_landmarks`` besides."""
    rows: dict = {}
    for key in face:
        name, _, level = key.partition("@")
        if level != "1":
            continue
        for j, feature in enumerate(FEATURES):
            full = face[key][j]
            if abs((landmarks or face)[key][j]) < GEOMETRY_FLOOR:
                continue
            moved = warp[key][j]
            rows.setdefault(name, {})[feature] = {
                "ratio": round(float(moved / full), 3),
                "half_over_full": round(float(warp[f"{name}@0.5"][j] / moved), 3) if moved else None}
            if landmarks is not None:
                rows[name][feature]["ratio_to_landmarks"] = round(float(moved / landmarks[key][j]), 3)
    return rows


def tally(per_clip: dict[str, dict]) -> dict:
    """{clip: geometry_rows(...)} → {"met": {"ratio": {"met", "of"}, "half": ...}, "median_ratio": {emotion: {feature}}}."""
    met = {"ratio": [0, 0], "half": [0, 0]}
    ratios: dict = {}
    for rows in per_clip.values():
        for name, features in rows.items():
            for feature, row in features.items():
                met["ratio"][0] += RATIO_BAR[0] <= row["ratio"] <= RATIO_BAR[1]
                met["ratio"][1] += 1
                if row["half_over_full"] is not None:
                    met["half"][0] += HALF_BAR[0] <= row["half_over_full"] <= HALF_BAR[1]
                    met["half"][1] += 1
                ratios.setdefault(name, {}).setdefault(feature, []).append(row["ratio"])
    return {"met": {k: {"met": v[0], "of": v[1]} for k, v in met.items()},
            "median_ratio": {n: {f: round(float(np.median(r)), 3) for f, r in fs.items()} for n, fs in ratios.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="speaker folders with an expression warp")
    parser.add_argument("--data", default="runs/bundled/heldout-espeak", help="held-out prepared clips with truth")
    parser.add_argument("--clips", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--truth-pose", choices=("speaker", "clip"), default="speaker",
                        help="render the clip's face states with the speaker's own head poses (the default: both "
                             "sides read at the same pose) or with the clip's")
    parser.add_argument("--out", default="bench/results/emotion_geometry.json")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from talker import DAETalkerPipeline
    from talker.evaluation.metrics import FaceProbe
    from talker.training.data import load_dataset

    index, clips = load_dataset(args.data)
    crops = {e["id"]: e["crop"] for e in index["clips"]}
    if max(args.clips) >= len(clips):
        raise SystemExit(f"{args.data} holds {len(clips)} clips; asked for clip {max(args.clips)}")
    probe = FaceProbe()
    faces, marked = {}, {}  # per clip and head poses: the face's own change at each setting (as its frames
    # show it, and as its landmarks say), the same for every model whose head moves alike
    results = {"command": "python bench/emotion_geometry.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "data": args.data, "seconds": args.seconds, "truth_pose": args.truth_pose, "geometry_floor": GEOMETRY_FLOOR,
               "bars": {"ratio": RATIO_BAR, "half_over_full": HALF_BAR}, "clips": {}, "models": {}}
    for model in args.models:
        pipe = DAETalkerPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        if pipe.expression is None:
            raise SystemExit(f"{model}: no expression warp (talker add-emotion --method warp)")
        names = list(pipe.emotion_names)
        settings = {f"{name}@{level:g}": np.eye(len(names))[k] * level for k, name in enumerate(names) for level in (0.5, 1.0)}
        per_clip = {}
        for c in tqdm(args.clips, desc=Path(model).name):
            clip = clips[c]
            n = min(clip.n_frames, int(args.seconds * 25))
            truth = dict(np.load(clip.path / "truth.npz"))
            out = pipe(clip.audio[: n * 640], sampling_rate=16000, generator=torch.Generator().manual_seed(0))
            frames = np.asarray(out.frames)[:n]
            marks = probe.landmarks(frames)
            if args.truth_pose == "speaker":
                truth["pose"] = np.asarray(out.poses, np.float64)[:n]
            key = (c, frames.shape[1], truth["pose"][:n].tobytes())
            if key not in faces:  # the truth's frames cut as the clip was, at the speaker's side
                base = truth_geometry(truth, np.zeros(len(names)), range(n))
                marked[key] = {k: np.nanmean(truth_geometry(truth, e, range(n)) - base, 0) for k, e in settings.items()}
                plain = render_truth(truth, np.zeros(len(names)), range(n), crops[clip.id], frames.shape[1])[0]
                found = probe.landmarks(plain)
                faces[key] = {k: np.nanmean(visible_geometry(truth, e, range(n), crops[clip.id], frames.shape[1], found), 0)
                              for k, e in settings.items()}
                results["clips"][c] = clip.id
            warp = {k: np.nanmean(warp_geometry(pipe, frames, marks, e), 0) for k, e in settings.items()}
            per_clip[clip.id] = geometry_rows(faces[key], warp, marked[key])
        results["models"][str(model)] = {"clips": per_clip, **tally(per_clip)}
        print(model, results["models"][str(model)]["met"], results["models"][str(model)]["median_ratio"], flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
