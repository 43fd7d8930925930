"""Could anything but the pixels teach the expression warp how far the face moves? On the warp's own
training takes, how far two moves that a real speaker's takes would also give carry the face's
points, against how far the face itself moves:

    python bench/emotion_supervision.py --out bench/results/emotion_supervision.json \
        [--neutral runs/bundled/takes256-none] [--data runs/bundled/takes256-happy ...] [--lines 3] [--every 6]

For each emotional take of the first ``--lines`` training lines (``split_clips``' split, as
``talker add-emotion`` makes it), paired with its neutral take by DTW of the speech and framed as
the neutral take was cut (the warp's own pairs), on every ``--every``-th frame at full intensity, at
the crops' kept side (256²):

- ``face_mesh``: MediaPipe's face mesh run on the emotional frame against the neutral one (a
  landmark loss would ask the warp's flow to carry the points that far);
- ``dis_medium``, ``dis_ultrafast``, ``farneback``: OpenCV's optical flow from the neutral frame to
  the emotional one carrying the face mesh's points of the neutral frame (a flow loss would ask
  the warp's flow to be that flow);

each feature's change (``PROBE_FEATURES``, ÷ the eye-corner distance) over the face's own,
read off the synthetic renderer's points for the same face states (``truth_geometry``), for the
features the face moves by at least ``GEOMETRY_FLOOR``. A teacher worth having reads near 1.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from emotion import GEOMETRY_FLOOR, flow_at, truth_geometry
from talker.evaluation.metrics import PROBE_FEATURES as FEATURES
from talker.evaluation.results import write_results

EMOTIONS = ("happy", "sad", "angry", "surprised")


def optical_flows():
    """{name: (a, b) grey uint8 frames → (H, W, 2) forward flow in pixels}: OpenCV's dense flows."""
    import cv2

    return {
        "dis_medium": lambda a, b: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None),
        "dis_ultrafast": lambda a, b: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST).calc(a, b, None),
        "farneback": lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 9, 5, 5, 1.1, 0),
    }


def carried(points: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(N, P, 2) points (fractions of the frame) carried by (N, H, W, 2) forward flows (pixels)."""
    h, w = flow.shape[1:3]
    return points + flow_at(points, torch.from_numpy(flow).permute(0, 3, 1, 2)) / np.array([w, h])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neutral", default="runs/bundled/takes256-none", help="the neutral takes (prepared)")
    parser.add_argument("--data", nargs="+", default=[f"runs/bundled/takes256-{e}" for e in EMOTIONS],
                        help="the emotional takes (prepared, with synthetic truth)")
    parser.add_argument("--lines", type=int, default=3, help="training lines measured")
    parser.add_argument("--every", type=int, default=6, help="every n-th frame of each pair")
    parser.add_argument("--out", default="bench/results/emotion_supervision.json")
    args = parser.parse_args(argv)

    import cv2

    from talker.evaluation.metrics import FaceProbe, landmark_features
    from talker.training.data import split_clips
    from talker.training.expression import dtw_path, frame_features, load_takes, reframe, sharp_frames

    takes = load_takes(args.neutral, args.data)
    side = takes["kept"]
    if not side:
        raise SystemExit("the takes kept no sharper crops (talker prepare --refiner-resolution)")
    trained = sorted(split_clips(takes["ids"])[0])[: args.lines]
    neutral = {c.id: c for c in takes["neutral"]}
    probe, flows = FaceProbe(), optical_flows()
    changes: dict = {}
    for clip in takes["emotional"]:
        if clip.id not in trained or clip.emotion is None:
            continue
        ref = neutral[clip.id]
        if not (ref.path / "truth.npz").exists():
            raise SystemExit(f"{ref.path}: no synthetic truth to measure against")
        i, j = map(np.array, zip(*dtw_path(frame_features(ref), frame_features(clip))))
        j = np.minimum(j, len(clip.emotion) - 1)
        k = int(np.argmax(clip.emotion.sum(0)[: len(EMOTIONS)]))
        pick = np.flatnonzero(clip.emotion[j, k] > 0.99)[:: args.every]
        i, j = i[pick], j[pick]
        calm = sharp_frames(ref, side, side)[i]
        moved = reframe(sharp_frames(clip, side, side)[j], takes["crops"][id(clip)], takes["crops"][id(ref)])
        marks = probe.landmarks(calm)
        e = np.eye(len(EMOTIONS))[k]
        truth = dict(np.load(ref.path / "truth.npz"))
        row = changes.setdefault(EMOTIONS[k], {"face": [], "face_mesh": [], **{m: [] for m in flows}})
        row["face"].append(np.nanmean(truth_geometry(truth, e, i) - truth_geometry(truth, np.zeros_like(e), i), 0))
        row["face_mesh"].append(np.nanmean(landmark_features(probe.landmarks(moved)) - landmark_features(marks), 0))
        grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (*calm, *moved)]
        for name, flow in flows.items():
            field = np.stack([flow(a, b) for a, b in zip(grey[: len(calm)], grey[len(calm):])])
            row[name].append(np.nanmean(landmark_features(carried(marks, field)) - landmark_features(marks), 0))
        print(clip.id, EMOTIONS[k], len(i), flush=True)
    results = {"command": "python bench/emotion_supervision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "neutral": args.neutral, "data": args.data, "lines": trained, "side": side,
               "geometry_floor": GEOMETRY_FLOOR, "emotions": {}}
    for name, row in changes.items():
        face = np.mean(row.pop("face"), 0)
        results["emotions"][name] = {
            feature: {"face": round(float(face[q]), 4),
                      **{m: round(float(np.mean(v, 0)[q] / face[q]), 3) for m, v in row.items()}}
            for q, feature in enumerate(FEATURES) if abs(face[q]) >= GEOMETRY_FLOOR}
        print(name, results["emotions"][name], flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
