"""Contact sheet and sample video of the synthetic speaker (docs/).

    python scripts/synth_contact_sheet.py --out docs

Tiles: visemes at their most typical frame of real clips, a blink, head poses at the extremes of
the clips, and the four emotions at full intensity; each labelled with its ground truth.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from talker.data.face import FaceState, SyntheticFace
from talker.defaults import EMOTIONS
from talker.data.synthetic import VISEMES
from talker.video import read_video


def label(img, text):
    img = img.copy()
    cv2.rectangle(img, (0, img.shape[0] - 18), (img.shape[1], img.shape[0]), (0, 0, 0), -1)
    cv2.putText(img, text, (4, img.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "talker", "synth", "--out", tmp, "--clips", "4", "--seconds", "8",
                        "--seed", str(args.seed), "--emotion", "none", "-q"], check=True)
        clips = sorted(Path(tmp, "videos").glob("*.mp4"))
        frames, truths = [], []
        for clip in clips:
            frames.append(read_video(clip).frames)
            truths.append(dict(np.load(Path(tmp, "truth", clip.stem + ".npz"))))
        all_frames = np.concatenate(frames)
        t = {k: np.concatenate([d[k] for d in truths]) for k in ("viseme", "mouth_open", "mouth_width", "blink", "pose")}
        tiles = []
        for v, name in enumerate(VISEMES):
            idx = np.flatnonzero(t["viseme"] == v)
            if name == "rest":
                idx = idx[t["mouth_open"][idx] < 0.01]
            if len(idx) == 0:
                continue
            # the frame where this viseme is most itself: mouth opening closest to its median
            k = idx[np.argmin(np.abs(t["mouth_open"][idx] - np.median(t["mouth_open"][idx])))]
            tiles.append(label(all_frames[k], f"{name} open={t['mouth_open'][k]:.2f}"))
        k = int(np.argmax(t["blink"]))
        tiles.append(label(all_frames[k], f"blink={t['blink'][k]:.2f}"))
        for axis, name in enumerate(("yaw", "pitch", "roll")):
            for k in (int(np.argmin(t["pose"][:, axis])), int(np.argmax(t["pose"][:, axis]))):
                tiles.append(label(all_frames[k], f"{name}={t['pose'][k, axis]:+.1f} deg"))
        face = SyntheticFace(256)
        for i, name in enumerate(EMOTIONS):
            e = np.zeros(4)
            e[i] = 1.0
            tiles.append(label(face.render(FaceState(emotion=e)), f"{name}=1.0"))
        while len(tiles) % 6:
            tiles.append(np.zeros_like(tiles[0]))
        sheet = np.concatenate([np.concatenate(tiles[i : i + 6], 1) for i in range(0, len(tiles), 6)], 0)
        sheet = cv2.resize(sheet, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "synthetic_contact_sheet.png"), sheet[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        # a short sample with sound
        subprocess.run([sys.executable, "-m", "talker", "synth", "--out", tmp + "/sample", "--clips", "1",
                        "--seconds", "9", "--seed", str(args.seed + 1), "--emotion", "happy=0.6", "-q"], check=True)
        sample = next(Path(tmp, "sample", "videos").glob("*.mp4"))
        (out / "synthetic_sample.mp4").write_bytes(sample.read_bytes())
    print(f"wrote {out / 'synthetic_contact_sheet.png'} and {out / 'synthetic_sample.mp4'}")


if __name__ == "__main__":
    main()
