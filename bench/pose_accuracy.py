"""Head pose from `talker prepare` against the synthetic speaker's ground truth.

    python bench/pose_accuracy.py --data runs/bundled/data --out bench/results/pose_accuracy.json

`--data` is a dataset prepared from `talker synth` videos (each clip then has truth_pose.npy).
Writes the mean absolute error per angle (yaw, pitch, roll; degrees), the correlation per angle,
and the truth's own spread for scale.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from talker.evaluation.results import write_results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="bench/results/pose_accuracy.json")
    args = ap.parse_args()
    index = json.loads((Path(args.data) / "dataset.json").read_text())
    est, truth = [], []
    for clip in index["clips"]:
        d = Path(args.data) / "clips" / clip["id"]
        if (d / "truth_pose.npy").is_file():
            est.append(np.load(d / "pose.npy"))
            truth.append(np.load(d / "truth_pose.npy"))
    if not est:
        raise SystemExit(f"{args.data}: no clips with synthetic ground truth")
    e, t = np.concatenate(est), np.concatenate(truth)
    result = {
        "data": args.data, "clips": len(est), "frames": int(len(e)), "resolution": index["resolution"],
        "mae_deg": dict(zip(("yaw", "pitch", "roll"), np.abs(e - t).mean(0).astype(float).round(3).tolist(), strict=True)),
        "correlation": dict(zip(("yaw", "pitch", "roll"), [round(float(np.corrcoef(e[:, i], t[:, i])[0, 1]), 3) for i in range(3)], strict=True)),
        "truth_std_deg": dict(zip(("yaw", "pitch", "roll"), t.std(0).astype(float).round(3).tolist(), strict=True)),
    }
    write_results(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
