"""``talker prepare``: talking-head videos → a training dataset.

For each video: decode at 25 fps, find the face in every frame with MediaPipe's face mesh (the
landmark model ships inside its wheel; ``requirements-prepare.txt``), cut **one fixed square**
around the face (the head moves inside it; the crop never jitters), resize, take the audio as
16 kHz mono, and estimate the head pose of every frame by PnP of the 2-D landmarks against a 3-D
model of this person's face (the Procrustes mean of the mesh's own 3-D landmarks over the
dataset's first clip; pose 0 is the speaker's average pose there).

Framing (``framing``): by default every clip of a speaker is cut with **the speaker's square**:
the median, over the clips of the dataset's first run, of each clip's own square (its median face
centre, sized from the face's extent), kept in ``dataset.json`` (and in an exported speaker's
``speaker.json``) and taken by every later clip, and by another dataset of the same speaker with
``crop_from`` that dataset or speaker (held-out clips, new takes). A camera that stays put then
frames the speaker's body, hair and background at the same pixels in every clip, as in
DAE-Talker's single-video setting; with a square per clip (``framing="clip"``) they shift by a
few pixels from clip to clip with the clip's head motion, a shift the diffusion autoencoder
learns only where its training clips happen to have it (two held-out sets cut with
the bundled speaker's training square come back 1.6 and 0.8 dB nearer their truth at 64² than cut
with their own: ``bench/results/decoder_fit_square.json``). A clip filmed otherwise (another
picture shape, or its face away from the square) is cut with its own square, and its entry says so
(``"framing": "own"``).

Dataset layout (the same for real and synthetic speakers)::

    DATA/dataset.json                 fps, resolution, framing, square, clips (id, source, frames,
                                      crop, framing), skipped
    DATA/face_model.npy               (468, 3) the speaker's 3-D face, for PnP
    DATA/clips/<id>/frames.mp4        lossless RGB H.264 of the crops (compact, exact)
    DATA/clips/<id>/frames_<R>.mp4    the same crops at the refiner's resolution R (--refiner-resolution)
    DATA/clips/<id>/audio.wav         16 kHz mono, exactly frames × 640 samples
    DATA/clips/<id>/pose.npy          (N, 3) yaw, pitch, roll in degrees
    DATA/clips/<id>/emotion.npy       (N, 4) intensities, when the source has them (talker synth) or
                                      --emotion gives the take's
    DATA/clips/<id>/truth.npz         talker synth's per-frame ground truth, when present
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from ..audio import FPS, SAMPLE_RATE
from ..defaults import DATASET_RESOLUTION, FRAMINGS
from ..errors import TalkerError, VideoError
from ..video import VideoWriter, iter_frames, read_audio_track

# landmarks that expressions barely move: nose, eye corners, forehead, cheekbones, temples
RIGID = [1, 4, 5, 6, 168, 197, 195, 33, 133, 263, 362, 10, 151, 9, 234, 454, 93, 323, 116, 345, 127, 356, 21, 251]
CROP_SCALE = 1.9  # crop side / face size
#: a clip takes the speaker's square where its own square's centre lies within this share of the
#: square's side of the speaker's, and its side within this range of the speaker's; else its own
SQUARE_OFFSET = 0.15
SQUARE_SIDE_RANGE = (0.8, 1.25)


def _face_mesh():
    try:
        import mediapipe as mp
    except ImportError:
        raise TalkerError(
            "talker prepare needs MediaPipe's face mesh: pip install --no-deps -r requirements-prepare.txt"
        ) from None
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                                           min_detection_confidence=0.5, min_tracking_confidence=0.5)


def detect_landmarks(frames) -> tuple[np.ndarray, tuple[int, int]]:
    """Frames (any iterable of (H, W, 3) uint8) → ((N, 468, 3) landmarks in pixels, z in the same
    scale, NaN where no face was found; (H, W))."""
    out, shape = [], (0, 0)
    with _face_mesh() as mesh:
        for frame in frames:
            h, w = shape = frame.shape[:2]
            res = mesh.process(np.ascontiguousarray(frame))
            if res.multi_face_landmarks:
                lm = res.multi_face_landmarks[0].landmark
                out.append(np.array([(p.x * w, p.y * h, p.z * w) for p in lm], np.float32))
            else:
                out.append(np.full((468, 3), np.nan, np.float32))
    return np.stack(out) if out else np.zeros((0, 468, 3), np.float32), shape


def stable_crop(landmarks: np.ndarray, height: int, width: int) -> tuple[int, int, int]:
    """One square crop (x0, y0, side) for the whole clip: the median face centre, sized from
    the largest face extent so that the moving head stays inside."""
    pts = landmarks[..., :2]
    lo, hi = np.nanmin(pts, axis=1), np.nanmax(pts, axis=1)  # (N, 2)
    centre = np.nanmedian((lo + hi) / 2, axis=0)
    size = np.nanpercentile(np.max(hi - lo, axis=1), 95)
    side = int(round(size * CROP_SCALE))
    x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2 + 0.08 * side))
    return x0, y0, side


def crop_frame(frame: np.ndarray, crop: tuple[int, int, int], resolution: int) -> np.ndarray:
    """Cut the square from a frame (edge-padded where it leaves the picture) and resize it."""
    x0, y0, side = crop
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = frame[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    interp = cv2.INTER_AREA if side > resolution else cv2.INTER_CUBIC
    return cv2.resize(patch, (resolution, resolution), interpolation=interp)


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |s R src + t − dst|² (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag(d) @ vt
    s = (sig * d).sum() / a.var(0).sum()
    return s, r, mu_d - s * r @ mu_s


def face_model(landmarks: np.ndarray) -> np.ndarray:
    """This person's 3-D face (468, 3) from a clip's 3-D landmarks: their Procrustes mean, turned
    so that the clip's mean head rotation is the identity (pose 0 = the speaker's average pose
    in that clip; mesh depth is too uncertain to define "frontal" by symmetry)."""
    from scipy.spatial.transform import Rotation

    valid = [lm for lm in landmarks if np.isfinite(lm).all()]
    ref = valid[len(valid) // 2]
    sample = valid[:: max(1, len(valid) // 200)]
    aligned = []
    for lm in sample:
        s, r, t = _umeyama(lm[RIGID], ref[RIGID])
        aligned.append(s * lm @ r.T + t)
    shape = np.mean(aligned, 0)
    shape -= shape[RIGID].mean(0)
    rotations = Rotation.from_matrix(np.stack([_umeyama(shape[RIGID], lm[RIGID])[1] for lm in sample]))
    return shape @ rotations.mean().as_matrix().T


def estimate_pose(landmarks: np.ndarray, model: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per-frame (yaw, pitch, roll) degrees by PnP of the rigid 2-D landmarks against ``model``.

    The rotation is read as R = Rz(roll)·Rx(pitch)·Ry(yaw) in image axes (x right, y down, z away
    from the camera), the convention of the synthetic speaker's ground truth.
    """
    from scipy.spatial.transform import Rotation

    # a long focal length (weak perspective): a face's depth is small against its distance to
    # the camera; on the synthetic speaker (orthographic) 20× the image side halved the error
    # of 2× (the usual webcam guess)
    f = 20.0 * max(width, height)
    cam = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    obj = model[RIGID].astype(np.float64)
    poses = np.full((len(landmarks), 3), np.nan, np.float32)
    rvec = tvec = None
    for k, lm in enumerate(landmarks):
        if not np.isfinite(lm).all():
            continue
        img = lm[RIGID, :2].astype(np.float64)
        ok = False
        try:
            if rvec is None:
                ok, rvec, tvec = _first_pnp(obj, img, cam)
            else:
                ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, rvec, tvec, useExtrinsicGuess=True,
                                              flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error:  # a degenerate frame: its pose is filled in from its neighbours
            rvec = tvec = None
        if ok:
            roll, pitch, yaw = Rotation.from_matrix(cv2.Rodrigues(rvec)[0]).as_euler("ZXY", degrees=True)
            poses[k] = (yaw, pitch, roll)
    return poses


def _first_pnp(obj: np.ndarray, img: np.ndarray, cam: np.ndarray):
    """PnP without a previous pose: SQPnP (global), or where it refuses the points (a face small
    against the long focal length: too little spread once normalised) EPnP refined iteratively."""
    try:
        return cv2.solvePnP(obj, img, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            return ok, rvec, tvec
        return cv2.solvePnP(obj, img, cam, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN rows of (N, ...) along time."""
    flat = x.reshape(len(x), -1).copy()
    ok = np.isfinite(flat).all(1)
    idx = np.arange(len(x))
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(idx, idx[ok], flat[ok, j])
    return flat.reshape(x.shape)


def _truth_for(video: Path) -> dict | None:
    """Ground truth written by ``talker synth`` next to its videos (DIR/truth/<id>.npz)."""
    path = video.parent.parent / "truth" / f"{video.stem}.npz"
    if video.parent.name == "videos" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return None


@dataclass
class FaceTrack:
    """A video's face track: (N, 468, 3) landmarks in pixels (gaps filled), the share of frames it
    was found in, and the picture's size."""

    landmarks: np.ndarray
    found: float
    height: int
    width: int

    @cached_property
    def own_square(self) -> tuple[int, int, int]:
        return stable_crop(self.landmarks, self.height, self.width)

    def shaped_like(self, width: int, height: int) -> bool:
        """Whether the clip's picture has the shape (not necessarily the size) of a width × height one."""
        return self.width * height == self.height * width


def find_face(video: Path, fps: int = FPS) -> FaceTrack:
    """The face in every frame of ``video``; raises TalkerError where the clip cannot be used."""
    try:
        audio = read_audio_track(video)
        if audio is None or len(audio) == 0:
            raise TalkerError("the video has no audio")
        landmarks, (h, w) = detect_landmarks(iter_frames(video, fps))
    except VideoError as e:
        raise TalkerError(f"not a readable video ({e})") from None
    found = np.isfinite(landmarks).all(axis=(1, 2))
    if found.mean() < 0.5:
        raise TalkerError(f"no detectable face (found in {found.mean():.0%} of frames)")
    return FaceTrack(_fill_gaps(landmarks), float(found.mean()), h, w)


def speaker_square(faces: Sequence[FaceTrack]) -> dict:
    """The speaker's square: the median of the clips' own squares (x0, y0, side), in pixels of the
    first clip's picture (clips of another picture shape left out), with that picture's size."""
    first = faces[0]
    alike = [f for f in faces if f.shaped_like(first.width, first.height)]
    squares = [np.array(f.own_square) * first.width / f.width for f in alike]
    x0, y0, side = (int(round(v)) for v in np.median(squares, axis=0))
    return {"x0": x0, "y0": y0, "side": side, "width": first.width, "height": first.height}


def square_for(square: dict, face: FaceTrack) -> tuple[int, int, int] | None:
    """The speaker's ``square`` in this clip's picture, or None where the clip was filmed otherwise:
    another picture shape, or its own square away from the speaker's (``SQUARE_OFFSET``,
    ``SQUARE_SIDE_RANGE``)."""
    if not face.shaped_like(square["width"], square["height"]):
        return None
    k = face.width / square["width"]
    crop = tuple(int(round(square[key] * k)) for key in ("x0", "y0", "side"))
    x0, y0, side = face.own_square
    offset = max(abs(x0 + side / 2 - crop[0] - crop[2] / 2), abs(y0 + side / 2 - crop[1] - crop[2] / 2)) / crop[2]
    lo, hi = SQUARE_SIDE_RANGE
    if offset > SQUARE_OFFSET or not lo <= side / crop[2] <= hi:
        return None
    return crop


def prepare_video(video: Path, out_dir: Path, clip_id: str, resolution: int, fps: int = FPS,
                  refiner_resolution: int | None = None, emotion: Sequence[float] | None = None,
                  face: FaceTrack | None = None, crop: tuple[int, int, int] | None = None) -> dict:
    """Prepare one video; returns its dataset entry. Raises TalkerError when it must be skipped.
    With ``refiner_resolution``, the same crops are also kept at that size (``frames_<R>.mp4``);
    with ``emotion`` (intensities in ``EMOTIONS`` order), every frame is labelled with it, unless
    the video has ``talker synth`` truth (whose labels are per frame). ``face``: its face track
    (:func:`find_face`) where already found; ``crop``: the square to cut (default: its own)."""
    # the picture is read twice (the face, then the crops), so that a long high-resolution video
    # never sits in memory; its face track does (landmarks: ~140 kB a second), and the sound is
    # decoded again here rather than held beside it
    face = face or find_face(video, fps)
    try:
        audio = read_audio_track(video)
    except VideoError as e:
        raise TalkerError(f"not a readable video ({e})") from None
    landmarks, h, w = face.landmarks, face.height, face.width
    crop = crop or face.own_square
    # one face model per dataset (from its first clip), so every clip's poses share one frame
    model_path = out_dir / "face_model.npy"
    if model_path.is_file():
        model = np.load(model_path, allow_pickle=False)
    else:
        model = face_model(landmarks)
        np.save(model_path, model.astype(np.float32))
    pose = _fill_gaps(estimate_pose(landmarks, model, w, h))
    n = len(landmarks)
    samples = n * SAMPLE_RATE // fps
    audio = np.pad(audio, (0, max(0, samples - len(audio))))[:samples]

    clip_dir = out_dir / "clips" / clip_id
    clip_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"frames.mp4": resolution}
    if refiner_resolution:
        sizes[f"frames_{refiner_resolution}.mp4"] = refiner_resolution
    with ExitStack() as stack:
        writers = {name: stack.enter_context(VideoWriter(clip_dir / name, fps, codec="libx264rgb", pix_fmt="rgb24", crf=0))
                   for name in sizes}
        for frame in iter_frames(video, fps):
            for name, size in sizes.items():
                writers[name].write(crop_frame(frame, crop, size))
    sf.write(clip_dir / "audio.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    np.save(clip_dir / "pose.npy", pose.astype(np.float32))
    entry = {"id": clip_id, "source": str(video), "frames": n, "duration": n / fps, "crop": list(crop),
             "face_found": face.found}
    truth = _truth_for(video)
    if truth is not None and len(truth["emotion"]) == n:
        np.save(clip_dir / "emotion.npy", truth["emotion"].astype(np.float32))
        np.save(clip_dir / "truth_pose.npy", truth["pose"].astype(np.float32))
        per_frame = {k: v for k, v in truth.items() if len(v) == n and not k.startswith(("phoneme", "word"))}
        np.savez(clip_dir / "truth.npz", **per_frame)  # for `talker evaluate`
        entry["synthetic_truth"] = True
    elif emotion is not None:
        np.save(clip_dir / "emotion.npy", np.tile(np.asarray(emotion, np.float32), (n, 1)))
    return entry


def prepare_dataset(videos: list[str | Path], out_dir: str | Path, resolution: int = DATASET_RESOLUTION, fps: int = FPS,
                    progress: bool = True, refiner_resolution: int | None = None,
                    emotion: Sequence[float] | None = None, framing: str | None = None,
                    crop_from: str | Path | None = None) -> dict:
    """Prepare every video into ``out_dir``; clips that cannot be used are reported and skipped.
    ``refiner_resolution`` (a power-of-two multiple of ``resolution``) keeps the crops at that
    size too, the truth of ``talker train refiner``; ``emotion`` labels every frame of recorded
    takes with the emotion they were recorded in (``talker add-emotion --method warp``);
    ``framing`` "speaker" (a new dataset's default) or "clip" (see the module's docstring; a
    dataset keeps the framing it was started with); ``crop_from``: a dataset of the same speaker,
    or the speaker exported from one, whose square this one takes."""
    from tqdm.auto import tqdm

    if resolution < 16 or resolution % 2:
        raise TalkerError(f"--resolution must be an even number ≥ 16; got {resolution}")
    if refiner_resolution is not None:
        ratio = refiner_resolution / resolution
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise TalkerError(f"--refiner-resolution must be {resolution} × 2, 4, 8, …; got {refiner_resolution}")
    if framing is not None and framing not in FRAMINGS:
        raise TalkerError(f"--framing must be one of {', '.join(FRAMINGS)}; got {framing}")
    square = _square_of(crop_from) if crop_from is not None else None
    if square is not None and framing == "clip":
        raise TalkerError("--crop-from gives the speaker's square: it goes with --framing speaker, not clip")
    files: list[Path] = []
    for v in videos:
        p = Path(v)
        if p.is_dir():
            files += sorted(x for x in p.iterdir() if x.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".avi"))
        else:
            files.append(p)
    if not files:
        raise TalkerError("no videos given")
    out = Path(out_dir)
    index_path = out / "dataset.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"clips": [], "skipped": []}
    if index.get("resolution", resolution) != resolution:
        raise TalkerError(f"{out} holds a {index['resolution']}px dataset; use another --out for {resolution}px")
    if index["clips"] and index.get("refiner_resolution") != refiner_resolution:
        raise TalkerError(f"{out} was prepared with refiner resolution {index.get('refiner_resolution')}; "
                          f"use another --out for {refiner_resolution}")
    # a dataset keeps its framing: one started before squares cut each clip with its own
    kept = index.get("framing", "clip" if index["clips"] else None)
    if kept is not None and framing is not None and framing != kept:
        raise TalkerError(f"{out} frames its clips by {kept}; use another --out for --framing {framing}")
    if square is not None and (kept == "clip" or index.get("square", square) != square):
        raise TalkerError(f"{out} already has its own framing; use another --out for --crop-from {crop_from}")
    framing = kept or framing or "speaker"
    out.mkdir(parents=True, exist_ok=True)
    index.update(fps=fps, resolution=resolution, sampling_rate=SAMPLE_RATE, refiner_resolution=refiner_resolution,
                 framing=framing)
    done = {c["source"] for c in index["clips"]}
    new_model = not (out / "face_model.npy").is_file()
    # first every new video's face, so that a new dataset's square comes from all of its clips
    faces: dict[Path, FaceTrack] = {}
    for video in tqdm([f for f in files if str(f) not in done], desc="finding faces", unit="video",
                      disable=not progress):
        try:
            if not video.is_file():
                raise TalkerError("file not found")
            faces[video] = find_face(video, fps)
        except TalkerError as e:
            index["skipped"].append({"source": str(video), "reason": str(e)})
            print(f"skipped {video}: {e}")
    if framing == "speaker" and faces and "square" not in index:
        index["square"] = square or speaker_square(list(faces.values()))
    _write_index(index_path, index)
    for video, face in tqdm(faces.items(), desc="preparing videos", unit="video", disable=not progress):
        clip_id = _unique_id(video.stem, {c["id"] for c in index["clips"]})
        crop = square_for(index["square"], face) if framing == "speaker" else None
        try:
            entry = prepare_video(video, out, clip_id, resolution, fps, refiner_resolution, emotion, face, crop)
        except TalkerError as e:
            index["skipped"].append({"source": str(video), "reason": str(e)})
            print(f"skipped {video}: {e}")
        else:
            if framing == "speaker":
                entry["framing"] = "speaker" if crop else "own"
                if not crop:
                    print(f"{video}: cut with its own square (filmed otherwise than the speaker's square: "
                          f"picture {face.width}×{face.height}, face at {face.own_square})")
            index["clips"].append(entry)
        _write_index(index_path, index)  # after every clip: an interrupted run loses nothing
    if new_model and index["clips"]:
        # pose 0 = the speaker's average head pose over the whole dataset (small angles: the
        # mean of the Euler angles is the mean rotation to well under a tenth of a degree)
        poses = {c["id"]: np.load(out / "clips" / c["id"] / "pose.npy") for c in index["clips"]}
        mean = np.concatenate(list(poses.values())).mean(0)
        for cid, pose in poses.items():
            np.save(out / "clips" / cid / "pose.npy", (pose - mean).astype(np.float32))
        index["pose_reference"] = "degrees from the speaker's average head pose in the dataset"
        _write_index(index_path, index)
    return index


def _square_of(source: str | Path) -> dict:
    """The speaker's square kept by ``source`` (``--crop-from``): a prepared dataset
    (``dataset.json``) or a speaker exported from one (``speaker.json``)."""
    for name in ("dataset.json", "speaker.json"):
        path = Path(source) / name
        if path.is_file():
            square = json.loads(path.read_text()).get("square")
            if square is None:
                raise TalkerError(f"--crop-from {source}: it keeps no speaker's square ({name}; prepared with "
                                  "--framing clip or before squares); prepare the speaker's clips again without "
                                  "--framing clip")
            return square
    raise TalkerError(f"--crop-from takes a dataset folder from `talker prepare` or a speaker folder; {source} "
                      "holds neither dataset.json nor speaker.json")


def _write_index(path: Path, index: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, path)


def _unique_id(stem: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "clip"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name
