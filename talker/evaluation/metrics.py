"""Quality of a speaker on held-out synthetic clips, against their exact ground truth.

For every clip of a prepared held-out dataset (``talker prepare`` on ``talker synth`` videos):

- fidelity: PSNR / SSIM of audio-driven frames against the truth frames (same crop), and the
  upper bound: the same decoder from the true latents (the encoder of the truth frames), with
  the same fixed noise;
- lip-sync: the inner-lip gap measured on the pixels by MediaPipe's face mesh (not part of the
  model being judged), correlated with the truth ``mouth_open``; the share of silent frames whose
  lips are closed (closed = below the gap that 95% of truly closed truth frames stay under); the
  mean opening while speaking over that in pauses; and lips closed on noise alone. The truth is
  the TTS's phoneme events or, for recorded speech, its forced alignment (``talker synth --speech``);
- pose: the predicted pose against the truth pose (mean absolute error per angle), and its
  naturalness (speed and range against the truth's);
- temporal jitter: mean absolute difference of consecutive frames, with the fixed noise and with
  fresh noise per frame, against the truth frames';
- emotion: with each emotion at 1.0 versus neutral, the change of expression features (mouth
  corners, brows, eye opening) measured by the face mesh, against the change the synthetic
  renderer makes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import EMOTIONS, NOISE_TEST_LEVEL_DBFS
from ..errors import TalkerError
from .results import write_results

PROBE_SIZE = 256  # frames are upscaled to this side before the face mesh looks at them
MESH_POINTS = 468  # landmarks of the face mesh (without the irises)
# what FaceProbe.features reads, in its columns' order
PROBE_FEATURES = ("lip_gap", "corner_lift", "mouth_width", "brow_height", "eye_opening")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(x, y, channel_axis=2, data_range=255) for x, y in zip(a, b, strict=True)]))


def jitter(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames (0–255 scale)."""
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


class FaceProbe:
    """Expression features read off the pixels by MediaPipe's face mesh."""

    def __init__(self):
        try:
            import mediapipe as mp
        except ImportError:
            raise TalkerError("talker evaluate needs MediaPipe: pip install --no-deps -r requirements-prepare.txt") from None
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)

    def landmarks(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 frames → (N, 468, 2) face-mesh landmarks (x, y as fractions of the
        frame's width and height); NaN where no face is found."""
        import cv2

        out = np.full((len(frames), MESH_POINTS, 2), np.nan)
        for k, f in enumerate(frames):
            big = cv2.resize(f, (PROBE_SIZE, PROBE_SIZE), interpolation=cv2.INTER_CUBIC)
            res = self.mesh.process(big)
            if res.multi_face_landmarks:
                out[k] = [(q.x, q.y) for q in res.multi_face_landmarks[0].landmark]
        return out

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, 5): lip gap, mouth-corner lift, mouth width, brow height, eye opening — each divided
        by the distance between the outer eye corners; NaN where no face is found."""
        return landmark_features(self.landmarks(frames))


def landmark_features(p: np.ndarray) -> np.ndarray:
    """(N, ≥468, 2) face-mesh landmarks → (N, 5) :data:`PROBE_FEATURES`, each ÷ the distance
    between the outer eye corners (NaN rows stay NaN): what :class:`FaceProbe` reads off the
    landmarks it finds, and what the synthetic renderer's own landmarks (which follow the face
    mesh's numbering) say the face did."""
    scale = np.linalg.norm(p[:, 33] - p[:, 263], axis=-1)
    centre_y = (p[:, 13, 1] + p[:, 14, 1]) / 2
    return np.stack([
        np.linalg.norm(p[:, 13] - p[:, 14], axis=-1),
        centre_y - (p[:, 61, 1] + p[:, 291, 1]) / 2,
        np.linalg.norm(p[:, 61] - p[:, 291], axis=-1),
        (p[:, 159, 1] + p[:, 386, 1]) / 2 - (p[:, 105, 1] + p[:, 334, 1]) / 2,
        (np.linalg.norm(p[:, 159] - p[:, 145], axis=-1) + np.linalg.norm(p[:, 386] - p[:, 374], axis=-1)) / 2,
    ], 1) / scale[:, None]


def _corr(a, b) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _emotion_truth_change(probe: FaceProbe, resolution: int) -> dict:
    """How much the synthetic renderer itself changes each expression feature at intensity 1."""
    from ..data.face import FaceState, SyntheticFace

    face = SyntheticFace(PROBE_SIZE)
    neutral = probe.features(face.render(FaceState())[None])[0]
    out = {}
    for i, name in enumerate(EMOTIONS):
        e = np.zeros(4)
        e[i] = 1.0
        out[name] = (probe.features(face.render(FaceState(emotion=e))[None])[0] - neutral).round(4).tolist()
    return out


def closed_threshold(gap_truth: np.ndarray, mouth_open: np.ndarray) -> float:
    """The lip gap (probe units) under which lips count as closed: the gap that 95% of the truth
    frames whose mouth is truly shut stay under."""
    closed = mouth_open < 0.02
    return float(np.nanpercentile(gap_truth[closed], 95)) if closed.any() else float("nan")


def closed_share(gap: np.ndarray, threshold: float, frames: np.ndarray | None = None) -> float:
    """The share of frames (those where the mask ``frames`` is true, or all) whose lip gap is at
    most ``threshold`` (see :func:`closed_threshold`); a frame the probe could not read counts as
    open; NaN where there are no such frames."""
    gap = gap if frames is None else gap[frames]
    return float(np.mean(gap <= threshold)) if len(gap) else float("nan")


def lipsync_scores(gap_gen: np.ndarray, gap_truth: np.ndarray, truth: dict, n: int) -> dict:
    """Lip-sync of generated frames against a clip's truth (``talker synth``'s, from TTS phoneme
    events or from the forced alignment of a recording), both read by the same face probe.

    Returns mouth_corr (generated lip gap vs truth mouth_open), silent_closed (share of pause
    frames whose lips are closed), open_ratio (mean gap while speaking ÷ in pauses), the same
    for the truth frames through the probe, and the closed threshold used.
    """
    mouth_open = truth["mouth_open"][:n]
    threshold = closed_threshold(gap_truth, mouth_open)
    silent = ~truth["speaking"][:n].astype(bool)

    def ratio(gap):
        if not silent.any() or silent.all():
            return float("nan")
        return float(np.nanmean(gap[~silent]) / max(np.nanmean(gap[silent]), 1e-6))

    return {"mouth_corr": _corr(gap_gen, mouth_open), "mouth_corr_truth_frames": _corr(gap_truth, mouth_open),
            "silent_closed": closed_share(gap_gen, threshold, silent),
            "silent_closed_truth_frames": closed_share(gap_truth, threshold, silent),
            "open_ratio": ratio(gap_gen), "open_ratio_truth_frames": ratio(gap_truth), "closed_threshold": threshold}


def gap_slope(gap: np.ndarray, neutral_gap: np.ndarray) -> float:
    """Least-squares slope of one set of frames' lip gap on another's of the same speech, frame by
    frame (an emotion's against neutral's: 1, the opening moves as before; under 1, flattened),
    over the frames where the probe read both."""
    ok = np.isfinite(gap) & np.isfinite(neutral_gap)
    return round(float(np.polyfit(neutral_gap[ok], gap[ok], 1)[0]), 3)


def noise_only_scores(pipe, probe: FaceProbe, threshold: float, *, seconds: float = 10.0,
                      level_dbfs: float = NOISE_TEST_LEVEL_DBFS,
                      kinds=("pink", "brown", "hum", "babble"), babble_sources: list[np.ndarray] | None = None,
                      seed: int = 0, decoder: str | None = None, steps: int | None = None, refine: bool = True) -> dict:
    """Lips closed (gap ≤ ``threshold``) on ``seconds`` of noise alone, per noise kind, at a
    speech-like level (RMS ``level_dbfs``): room noise, hum and babble must not move the lips."""
    from ..training.augment import make_noise

    out = {}
    for k, kind in enumerate(kinds):
        if kind == "babble" and not babble_sources:
            continue
        rng = np.random.default_rng([seed, k])
        noise = make_noise(kind, int(seconds * 16000), rng, babble_sources) * 10 ** (level_dbfs / 20)
        frames = pipe(noise, sampling_rate=16000, generator=torch.Generator().manual_seed(seed), decoder=decoder,
                      refine=refine, **({"num_inference_steps": steps} if steps else {})).frames
        gap = probe.features(frames)[:, 0]
        out[kind] = closed_share(gap, threshold)
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


@torch.no_grad()
def evaluate_speaker(model: str, data_dir: str, steps_list=None, max_clips: int = 4,
                     max_seconds: float = 8.0, seed: int = 0, emotions: bool = True, progress: bool = True,
                     decoder: str | None = None, noise_test: bool = True) -> dict:
    """Run every measurement with ``decoder`` ("distilled", "ddim" or "light"; default: the speaker's
    default) at each step count of ``steps_list`` (default: that decoder's default); returns a
    JSON-able dict (per step count, averaged over clips). ``noise_test`` adds ``noise_only``:
    lips closed on 10 s of noise alone (room noise, hum, babble). One progress bar counts the
    frames of the whole evaluation, with the time left. Frames are the decoder's, unrefined: the
    truth frames they are compared with are at the decoder's resolution (``bench/real_speech.py``
    and ``bench/refiner.py`` measure refined frames)."""
    from tqdm.auto import tqdm

    from ..pipelines import DAETalkerPipeline
    from ..training.data import load_dataset

    pipe = DAETalkerPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if pipe.encoder is None:
        raise TalkerError("the upper bound needs the speaker's semantic encoder (encoder/)")
    decoder = decoder or pipe.default_decoder
    steps_list = [pipe.steps_for(decoder, s) for s in (steps_list or [None])]  # bad counts fail before any work
    ae = pipe.autoencoder_for(decoder)
    _, clips = load_dataset(data_dir)
    clips = [c for c in clips if (c.path / "truth.npz").is_file()][:max_clips]
    if not clips:
        raise TalkerError(f"{data_dir} has no clips with synthetic ground truth (truth.npz); prepare `talker synth` videos")
    probe = FaceProbe()
    res = pipe.resolution
    results = {"model": str(model), "data": str(data_dir), "clips": [c.id for c in clips], "seconds_per_clip": max_seconds,
               "resolution": res, "decoder": decoder, "steps": {}}
    lengths = [min(c.n_frames, int(max_seconds * 25)) for c in clips]
    noise_kinds = 4 if noise_test else 0  # pink, brown, hum, babble: 10 s each
    total = (3 * sum(lengths) * len(steps_list)  # generated, upper bound, fresh noise
             + noise_kinds * 250 + (5 * lengths[0] if emotions else 0))
    bar = tqdm(total=total, unit="frame", desc=f"evaluating ({decoder}, {','.join(map(str, steps_list))} steps)",
               disable=not progress)
    for steps in steps_list:
        rows = []
        for clip in clips:
            n = min(clip.n_frames, int(max_seconds * 25))
            truth_frames = clip.frames[:n]
            truth = dict(np.load(clip.path / "truth.npz"))
            audio = clip.audio[: n * 640]
            emo = truth["emotion"][:n].mean(0)
            g = torch.Generator().manual_seed(seed)
            tic = time.perf_counter()
            out = pipe(audio, sampling_rate=16000, num_inference_steps=steps, generator=g,
                       emotion=emo.clip(0, 1).tolist(), decoder=decoder, refine=False)
            gen_time = time.perf_counter() - tic
            gen = out.frames
            z_true = ae.encode(truth_frames)
            upper = ae.decode(z_true, out.fixed_noise, steps, batch_size=16)
            fresh_noise = torch.randn((n, 3, res, res), generator=torch.Generator().manual_seed(seed + 1))
            fresh = ae.decode(torch.from_numpy(out.latents), fresh_noise, steps, batch_size=16)
            feats_gen, feats_truth = probe.features(gen), probe.features(truth_frames)
            sync = lipsync_scores(feats_gen[:, 0], feats_truth[:, 0], truth, n)
            pose_t = truth["pose"][:n]
            pose_p = out.poses
            rows.append({
                "psnr": psnr(gen, truth_frames), "psnr_upper_bound": psnr(upper, truth_frames),
                "ssim": ssim(gen, truth_frames), "ssim_upper_bound": ssim(upper, truth_frames),
                **sync,
                "pose_mae_deg": np.abs(pose_p - pose_t).mean(0).tolist(),
                "pose_speed_deg_per_frame": np.abs(np.diff(pose_p, axis=0)).mean(0).tolist(),
                "pose_speed_truth": np.abs(np.diff(pose_t, axis=0)).mean(0).tolist(),
                "pose_range_deg": (pose_p.max(0) - pose_p.min(0)).tolist(),
                "pose_range_truth": (pose_t.max(0) - pose_t.min(0)).tolist(),
                "jitter_fixed_noise": jitter(gen), "jitter_fresh_noise": jitter(fresh), "jitter_truth": jitter(truth_frames),
                "frames": n, "generation_s": gen_time,
            })
            bar.update(3 * n)
        summary = {k: (np.nanmean([r[k] for r in rows], axis=0).round(4).tolist()) for k in rows[0]}
        summary["psnr_gap_db"] = round(summary["psnr_upper_bound"] - summary["psnr"], 3)
        summary["jitter_ratio_to_truth"] = round(summary["jitter_fixed_noise"] / summary["jitter_truth"], 3)
        results["steps"][str(steps)] = {"mean": summary, "per_clip": rows}
    if noise_test:
        first = results["steps"][str(steps_list[0])]["mean"]
        results["noise_only"] = noise_only_scores(
            pipe, probe, first["closed_threshold"], decoder=decoder, steps=steps_list[0], seed=seed,
            babble_sources=[c.audio for c in clips], refine=False)
        bar.update(noise_kinds * 250)
    if emotions:
        clip = clips[0]
        n = min(clip.n_frames, int(max_seconds * 25))
        audio = clip.audio[: n * 640]
        base = probe.features(pipe(audio, sampling_rate=16000, num_inference_steps=steps_list[0], decoder=decoder,
                                   generator=torch.Generator().manual_seed(seed), emotion=[0, 0, 0, 0],
                                   refine=False).frames)
        bar.update(n)
        change = {}
        for i, name in enumerate(EMOTIONS):
            e = [0.0] * 4
            e[i] = 1.0
            f = probe.features(pipe(audio, sampling_rate=16000, num_inference_steps=steps_list[0], decoder=decoder,
                                    generator=torch.Generator().manual_seed(seed), emotion=e, refine=False).frames)
            change[name] = np.nanmean(f - base, axis=0).round(4).tolist()
            bar.update(n)
        results["emotion"] = {"features": list(PROBE_FEATURES),
                              "generated_change": change, "truth_change": _emotion_truth_change(probe, res)}
    bar.close()
    return results


def plot_results(results: dict, path: str | Path) -> None:
    """A one-page PNG summary of ``evaluate_speaker``'s results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(int(s) for s in results["steps"])
    m = [results["steps"][str(s)]["mean"] for s in steps]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    ax[0].plot(steps, [x["psnr"] for x in m], "o-", label="audio-driven")
    ax[0].plot(steps, [x["psnr_upper_bound"] for x in m], "s--", label="true latents (upper bound)")
    ax[0].set(title=f"PSNR (dB), {results.get('decoder', 'ddim')} decoder", xlabel="steps")
    ax[0].legend()
    ax[1].plot(steps, [x["mouth_corr"] for x in m], "o-", label="mouth corr.")
    ax[1].plot(steps, [x["silent_closed"] for x in m], "s-", label="silent & closed")
    ax[1].set(title="lip-sync", xlabel="DDIM steps", ylim=(0, 1.05))
    ax[1].legend()
    pose = np.array([x["pose_mae_deg"] for x in m])
    for j, name in enumerate(("yaw", "pitch", "roll")):
        ax[2].plot(steps, pose[:, j], "o-", label=name)
    ax[2].set(title="pose error (deg)", xlabel="DDIM steps")
    ax[2].legend()
    ax[3].plot(steps, [x["jitter_fixed_noise"] for x in m], "o-", label="fixed noise")
    ax[3].plot(steps, [x["jitter_fresh_noise"] for x in m], "s-", label="fresh noise per frame")
    ax[3].plot(steps, [x["jitter_truth"] for x in m], "k--", label="truth")
    ax[3].set(title="jitter (mean |Δframe|)", xlabel="DDIM steps")
    ax[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results: dict, out_json: str | Path, out_png: str | Path | None = None) -> None:
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    write_results(out_json, results)
    if out_png:
        plot_results(results, out_png)
