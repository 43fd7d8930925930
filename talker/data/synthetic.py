"""The synthetic speaker: real TTS speech driving a real photograph, with exact per-frame truth.

``talker synth`` writes what a maintainer's camera would give (25 fps H.264 + AAC mp4s) together
with the ground truth of every frame, so lip-sync, pose and fidelity can be measured exactly:

    DIR/videos/<id>.mp4   DIR/truth/<id>.npz   DIR/meta.json

Speech comes from espeak-ng with phoneme start times (``tts.py``); each phoneme maps to a viseme,
visemes are coarticulated by smoothing at 100 Hz, lips close fully on p/b/m and in pauses; the
head moves smoothly, nods on emphasised words and idles in silence; eyes blink every 2–5 s;
emotions (happy, sad, angry, surprised) are expression warps. Rendering is ``face.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..audio import FPS, SAMPLE_RATE, num_frames
from ..defaults import EMOTIONS
from ..defaults import SPEECH_LANGUAGE as ENGLISH
from ..errors import InputError, TalkerError
from .face import FaceState, SyntheticFace
from .tts import ESpeak, Phoneme, Speech, synthesize

VISEMES = ("rest", "pbm", "fv", "th", "aa", "e", "i", "o", "u", "cons", "sh", "r")
"""Viseme classes; ``truth["viseme"]`` holds indices into this tuple."""
VISEME_SHAPES = {  # (mouth_open, mouth_width) targets
    "rest": (0.0, 0.0), "pbm": (0.0, -0.05), "fv": (0.12, 0.02), "th": (0.2, 0.0), "aa": (0.95, 0.05),
    "e": (0.55, 0.15), "i": (0.32, 0.28), "o": (0.7, -0.3), "u": (0.28, -0.4), "cons": (0.28, 0.05),
    "sh": (0.22, -0.2), "r": (0.25, -0.15),
}
DEFAULT_VOICES = ("en-us", "en-gb+f3", "en-us+m3", "en-gb-scotland", "en-us+f2", "en-029+m4")
CONTROL_RATE = 100  # Hz at which mouth tracks are built and smoothed


def viseme_of(symbol: str) -> str:
    """The viseme class of an espeak-ng IPA phoneme (empty or '_' = pause)."""
    s = symbol.replace("ː", "").replace("ˑ", "").strip()
    if not s or s.startswith("_"):
        return "rest"
    c = s[0]
    if s.startswith(("tʃ", "dʒ")) or c in "ʃʒ":
        return "sh"
    for chars, name in (("pbm", "pbm"), ("fv", "fv"), ("θð", "th"), ("ɹrɚɝ", "r"), ("wuʊ", "u"),
                        ("oɔɒ", "o"), ("aɑæʌ", "aa"), ("eɛəɜɐ", "e"), ("iɪjy", "i")):
        if c in chars:
            return name
    return "cons"


# ----------------------------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------------------------

_SUBJECTS = ["the pilot", "my neighbour", "a young engineer", "the old captain", "our team", "the doctor",
             "every student", "the small robot", "her brother", "the crew", "a quiet farmer", "the teacher"]
_VERBS = ["checked", "painted", "carried", "opened", "bought", "measured", "found", "moved", "played with",
          "watched", "cleaned", "repaired", "described", "borrowed", "packed", "visited"]
_OBJECTS = ["the heavy box", "a blue map", "the broken clock", "five red apples", "the wooden bridge",
            "a bright lamp", "the morning paper", "two paper boats", "the garden gate", "a warm blanket",
            "the big window", "an empty bottle", "the launch schedule", "a muddy boot"]
_PLACES = ["before lunch", "near the harbour", "on a cold morning", "after the meeting", "in the kitchen",
           "at the station", "by the river", "during the storm", "under the old bridge", "at midnight"]
_OPENERS = ["Yesterday", "Honestly", "Believe it or not", "Every summer", "Much to our surprise", "Later that week"]
_QUESTIONS = ["Did you really think {s} {v} {o}?", "Why would {s} leave {o} {p}?", "Who told {s} about {o}?"]


def sentences(rng: np.random.Generator):
    """An endless stream of varied English sentences (statements, questions, exclamations)."""
    while True:
        s, v, o, p = (rng.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS, _PLACES))
        kind = rng.random()
        if kind < 0.5:
            yield f"{s.capitalize()} {v} {o} {p}."
        elif kind < 0.75:
            yield f"{rng.choice(_OPENERS)}, {s} {v} {o}."
        elif kind < 0.9:
            yield str(rng.choice(_QUESTIONS)).format(s=s, v=v, o=o, p=p)
        else:
            yield f"Look, {s} {v} {o} {p}!"


# ----------------------------------------------------------------------------------------------
# Clips
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipSpec:
    """How one clip is made: its phrases, voice, speaking rate (wpm), pitch (0–100) and seed."""

    id: str
    phrases: list[str]
    voice: str
    rate: int
    pitch: int
    seed: int
    emotion: list[float] | str = "none"  # "none", "random" or four intensities
    sources: list[str] = field(default_factory=list)  # recordings spoken (recorded speech), in order
    extra: dict = field(default_factory=dict)  # "speech": aligned recordings (list[Speech]) instead of TTS


def join_speech(parts: Sequence[Speech], pauses: Sequence[float], lead: float, trail: float) -> Speech:
    """Concatenate phrases with silences between them, shifting every timing."""
    audio, phonemes, words = [np.zeros(int(lead * SAMPLE_RATE), np.float32)], [], []
    t = lead
    for k, part in enumerate(parts):
        phonemes += [Phoneme(p.symbol, p.start + t, p.end + t, p.stressed) for p in part.phonemes]
        words += [w + t for w in part.words]
        audio.append(part.audio)
        t += part.duration
        gap = pauses[k] if k < len(parts) - 1 else trail
        audio.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        t += int(gap * SAMPLE_RATE) / SAMPLE_RATE
    wave = np.concatenate(audio)
    n = num_frames(len(wave), SAMPLE_RATE)
    wave = np.pad(wave, (0, max(0, n * SAMPLE_RATE // FPS - len(wave))))[: n * SAMPLE_RATE // FPS]
    return Speech(wave, phonemes, words)


def _smooth_noise(n: int, rng, hz: float, amp: float) -> np.ndarray:
    x = gaussian_filter1d(rng.standard_normal(n + 200), FPS / (2 * np.pi * hz), mode="reflect")[100:-100]
    return amp * x / (x.std() + 1e-8)


def _interval_envelope(times: np.ndarray, intervals: list[tuple[float, float]], ramp: float) -> np.ndarray:
    """1 far from every interval, 0 inside them, linear ramps of ``ramp`` seconds around them."""
    env = np.ones_like(times)
    for a, b in intervals:
        d = np.maximum(a - times, times - b)
        env = np.minimum(env, np.clip(d / ramp, 0, 1))
    return env


def animate(speech: Speech, emotion: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame ground truth for ``speech`` (25 fps, sampled at frame centres).

    Returns pose (N, 3) degrees, mouth_open (N,), mouth_width (N,), blink (N,), emotion (N, 4),
    viseme (N,) indices into VISEMES, speaking (N,) bool.
    """
    n = len(speech.audio) * FPS // SAMPLE_RATE
    duration = n / FPS
    ctrl_t = np.arange(int(np.ceil(duration * CONTROL_RATE)) + 1) / CONTROL_RATE
    frame_t = (np.arange(n) + 0.5) / FPS

    # mouth: viseme targets → coarticulation → full closure on p/b/m and in pauses
    open_t, width_t = np.zeros_like(ctrl_t), np.zeros_like(ctrl_t)
    vis_ctrl = np.zeros(len(ctrl_t), np.int64)
    closures, pauses = [], []
    articulation = rng.uniform(0.85, 1.1)
    for p in speech.phonemes:
        name = viseme_of(p.symbol)
        sel = (ctrl_t >= p.start) & (ctrl_t < p.end)
        o, w = VISEME_SHAPES[name]
        open_t[sel] = o * articulation * rng.uniform(0.9, 1.1)
        width_t[sel] = w
        vis_ctrl[sel] = VISEMES.index(name)
        if name == "pbm":
            closures.append((p.start, p.end))
    voiced = [(p.start, p.end) for p in speech.phonemes if viseme_of(p.symbol) != "rest"]
    # pauses: everything between voiced phonemes (espeak's pause phonemes and the silences
    # between phrases), and before the first and after the last
    bounds = [(-1.0, -1.0), *voiced, (duration + 1.0, duration + 1.0)]
    pauses = [(a[1], b[0]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b[0] > a[1]]
    open_s = gaussian_filter1d(open_t, 2.5, mode="nearest")
    width_s = gaussian_filter1d(width_t, 3.0, mode="nearest")
    # the closures are applied at the frame times themselves, so a frame inside a pause or a
    # p/b/m has its lips shut exactly
    closing = _interval_envelope(frame_t, closures, 0.04) * _interval_envelope(frame_t, pauses, 0.06)
    mouth_open = np.interp(frame_t, ctrl_t, np.clip(open_s, 0, 1)) * closing
    mouth_width = np.interp(frame_t, ctrl_t, width_s)
    viseme = vis_ctrl[np.clip(np.round(frame_t * CONTROL_RATE).astype(int), 0, len(ctrl_t) - 1)]
    speaking = np.zeros(n, bool)
    for a, b in voiced:
        speaking |= (frame_t >= a) & (frame_t < b)
    viseme[~speaking] = VISEMES.index("rest")

    # head: slow wander, livelier while speaking, nods on emphasised words, soft-limited to ±9°
    talk = gaussian_filter1d(speaking.astype(float), 0.3 * FPS, mode="nearest")
    liveliness = 0.45 + 0.55 * talk
    yaw = _smooth_noise(n, rng, 0.2, 3.0) + liveliness * _smooth_noise(n, rng, 0.5, 1.5)
    pitch = _smooth_noise(n, rng, 0.2, 1.8) + liveliness * _smooth_noise(n, rng, 0.6, 0.8)
    roll = _smooth_noise(n, rng, 0.15, 1.5) + liveliness * _smooth_noise(n, rng, 0.5, 0.6)
    energy = np.convolve(speech.audio**2, np.ones(SAMPLE_RATE // 5) / (SAMPLE_RATE // 5), mode="same")
    word_energy = [energy[min(int((w + 0.1) * SAMPLE_RATE), len(energy) - 1)] for w in speech.words]
    loud = np.quantile(word_energy, 0.5) if word_energy else 0.0
    frames_t = np.arange(n) / FPS
    for w, e in zip(speech.words, word_energy, strict=True):
        if e >= loud and rng.random() < 0.6:  # a nod: chin down and back, ~0.4 s
            amp, width = rng.uniform(1.5, 3.0), rng.uniform(0.3, 0.45)
            x = (frames_t - w) / width
            pitch += amp * np.where(np.abs(x - 0.5) < 0.5, 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(x, 0, 1)), 0.0)
    pose = 9.0 * np.tanh(np.stack([yaw, pitch, roll], 1) / 9.0)

    # eyes: a blink every 2–5 s (12–30 a minute): fast close, short hold, slower open
    blink = np.zeros(n)
    t0 = rng.uniform(0.3, 2.5)
    while t0 < duration:
        rel = frames_t + 0.5 / FPS - t0
        close = np.clip(rel / 0.07, 0, 1)
        opening = np.clip(1 - (rel - 0.1) / 0.13, 0, 1)
        blink = np.maximum(blink, np.where(rel < 0, 0, np.where(rel < 0.1, close, opening)))
        t0 += rng.uniform(2.0, 5.0)

    return dict(pose=pose.astype(np.float32), mouth_open=mouth_open.astype(np.float32),
                mouth_width=mouth_width.astype(np.float32), blink=blink.astype(np.float32),
                emotion=emotion.astype(np.float32), viseme=viseme.astype(np.int8), speaking=speaking)


def emotion_track(spec: str | Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) intensities: "none", "random" (neutral, one emotion, or a slow change), or constants."""
    if isinstance(spec, str):
        if spec == "none":
            return np.zeros((n, 4))
        if spec != "random":
            raise InputError(f"emotion must be 'none', 'random' or NAME=VALUE pairs; got {spec!r}")
        kind = rng.random()
        if kind < 0.2:
            return np.zeros((n, 4))
        a = np.zeros(4)
        a[rng.integers(4)] = rng.uniform(0.3, 1.0)
        if kind < 0.75:
            return np.tile(a, (n, 1))
        b = np.zeros(4)
        b[rng.integers(4)] = rng.uniform(0.3, 1.0)
        ramp = np.linspace(0, 1, n)[:, None]
        return (1 - ramp) * a + ramp * b
    values = np.asarray(spec, np.float64)
    return np.tile(values, (n, 1))


def make_clip(spec: ClipSpec, face: SyntheticFace):
    """Synthesise one clip: (frames iterator factory, 16 kHz audio, truth dict)."""
    rng = np.random.default_rng(spec.seed)
    parts = spec.extra.get("speech") or [synthesize(p, spec.voice, spec.rate, spec.pitch) for p in spec.phrases]
    pauses = rng.uniform(0.25, 0.8, size=max(0, len(parts) - 1))
    speech = join_speech(parts, pauses, lead=rng.uniform(0.2, 0.5), trail=rng.uniform(0.3, 0.6))
    n = len(speech.audio) * FPS // SAMPLE_RATE
    truth = animate(speech, emotion_track(spec.emotion, n, rng), rng)
    truth["phoneme_symbol"] = np.array([p.symbol for p in speech.phonemes], dtype="U8")
    truth["phoneme_start"] = np.array([p.start for p in speech.phonemes], np.float32)
    truth["phoneme_end"] = np.array([p.end for p in speech.phonemes], np.float32)
    truth["phoneme_viseme"] = np.array([VISEMES.index(viseme_of(p.symbol)) for p in speech.phonemes], np.int8)
    truth["word_start"] = np.array(speech.words, np.float32)

    def frames():
        for k in range(n):
            yield face.render(FaceState.from_truth(truth, k))

    return frames, speech.audio, truth


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-for-byte reproducible (fixed zip timestamps)."""
    import io

    tmp = Path(str(path) + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


_FACES: dict[int, SyntheticFace] = {}


def render_clip(spec: ClipSpec, out_dir: str, resolution: int) -> dict:
    """Write ``videos/<id>.mp4`` and ``truth/<id>.npz`` for one clip; returns its meta entry."""
    from ..video import VideoWriter

    if resolution not in _FACES:
        _FACES[resolution] = SyntheticFace(resolution)
    face = _FACES[resolution]
    frames, audio, truth = make_clip(spec, face)
    out = Path(out_dir)
    with VideoWriter(out / "videos" / f"{spec.id}.mp4", FPS, audio=audio, sampling_rate=SAMPLE_RATE, crf=18,
                     metadata={"comment": "synthetic speaker (talker synth)"}) as writer:
        for frame in frames():
            writer.write(frame)
    save_npz(out / "truth" / f"{spec.id}.npz", truth)
    meta = asdict(spec)
    meta.pop("extra")
    meta["text"] = " ".join(spec.phrases)
    meta["frames"] = int(len(truth["pose"]))
    meta["duration"] = len(audio) / SAMPLE_RATE
    meta["emotion_mean"] = truth["emotion"].mean(0).round(3).tolist()
    return meta


def plan_clips(*, clips: int | None, seconds: float, text_file: str | None, seed: int,
               voices: Sequence[str], emotion: str | Sequence[float]) -> list[ClipSpec]:
    """Decide every clip's text, voice, rate, pitch and seed (before any audio is made)."""
    rng = np.random.default_rng(seed)
    if text_file is not None:
        lines = [line.strip() for line in Path(text_file).read_text().splitlines() if line.strip()]
        if not lines:
            raise InputError(f"{text_file}: no text")
        # one clip per line; its sentences are spoken as phrases with pauses between them
        texts = [[m.strip() for m in re.findall(r"[^.!?]+[.!?]*", line) if m.strip(" .!?")] for line in lines]
        texts = [t for t in texts if t][: clips or None]
    else:
        if seconds <= 0:
            raise InputError(f"--seconds must be positive; got {seconds}")
        gen = sentences(rng)
        # measured: one generated sentence with its pause lasts ≈ 3.6 s at 140–190 wpm
        per_clip = max(1, int(round(seconds / 3.6)))
        texts = [[next(gen) for _ in range(per_clip)] for _ in range(clips or 1)]
    specs = []
    for i, phrases in enumerate(texts):
        r = np.random.default_rng([seed, i])
        specs.append(ClipSpec(
            id=f"{seed:04d}-{i:05d}", phrases=phrases, voice=str(r.choice(list(voices))),
            rate=int(r.integers(140, 191)), pitch=int(r.integers(35, 71)), seed=int(r.integers(2**31)),
            emotion=list(map(float, emotion)) if not isinstance(emotion, str) else emotion,
        ))
    return specs


def in_held_out(name: str, fraction: float) -> bool:
    """Whether recording ``name`` belongs to the held-out part: a stable hash of the name, so the
    split never depends on which other recordings are present or on a seed."""
    import hashlib

    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def plan_recorded_clips(alignments: Sequence[tuple[str, Speech]], *, clips: int | None, seconds: float, seed: int,
                        emotion: str | Sequence[float], voice: str = "recorded") -> list[ClipSpec]:
    """Group aligned recordings ``(name, speech)`` into clips of about ``seconds`` (in a seeded
    order; each recording is spoken once), with pauses between them as in TTS clips."""
    if seconds <= 0:
        raise InputError(f"--seconds must be positive; got {seconds}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(alignments))
    groups: list[list[tuple[str, Speech]]] = [[]]
    length = 0.0
    for k in order:
        name, speech = alignments[k]
        if groups[-1] and length + speech.duration > seconds:
            groups.append([])
            length = 0.0
        groups[-1].append((name, speech))
        length += speech.duration + 0.5
    specs = []
    for i, group in enumerate(groups[: clips or None]):
        r = np.random.default_rng([seed, i])
        specs.append(ClipSpec(
            id=f"{seed:04d}-{i:05d}", phrases=[s.text for _, s in group],
            voice=voice, rate=0, pitch=0, seed=int(r.integers(2**31)),
            emotion=list(map(float, emotion)) if not isinstance(emotion, str) else emotion,
            sources=[name for name, _ in group], extra={"speech": [s for _, s in group]},
        ))
    return specs


def align_recordings(recordings, *, language: str = ENGLISH, workers: int = 1,
                     progress: bool = True) -> tuple[list, list[dict]]:
    """Align every recording (``align.Recording``), spoken in ``language`` (an espeak-ng voice),
    in ``workers`` processes.

    Returns ([(name, Speech)], skipped [{source, reason}]) in the recordings' order.
    """
    from tqdm.auto import tqdm

    from ..errors import TalkerError
    from .align import align_recording

    done, skipped = [], []
    with ProcessPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(recordings), desc="aligning recordings", unit="file", disable=not progress) as bar:
        futures = [pool.submit(align_recording, rec, language) for rec in recordings]
        for rec, fut in zip(recordings, futures, strict=True):
            try:
                done.append((rec.name, fut.result().speech))
            except TalkerError as e:
                skipped.append({"source": str(rec.path), "reason": str(e)})
            bar.update()
    return done, skipped


def synth_dataset(out_dir: str | Path, *, clips: int | None = None, seconds: float = 10.0,
                  text_file: str | None = None, seed: int = 0, resolution: int = 256,
                  voices: Sequence[str] = DEFAULT_VOICES, emotion: str | Sequence[float] = "random",
                  speech: Sequence[str | Path] | None = None, transcripts: str | Path | None = None,
                  held_out: float = 0.0, split: str = "all", speaker: str = "recorded", credit: str | None = None,
                  language: str = ENGLISH, workers: int | None = None, progress: bool = True) -> list[dict]:
    """Generate the synthetic speaker's clips into ``out_dir``; returns the meta entries.

    With ``speech`` (recordings, or folders of them) and ``transcripts`` (``name: text`` lines),
    the clips speak those recordings instead of espeak-ng: each is force-aligned
    (``align.py``) and its phones drive the face; recordings that cannot be aligned are reported
    in ``meta.json`` ("skipped") and left out. ``held_out`` (a fraction of the recordings, by a
    stable hash of their names) and ``split`` ("train", "heldout" or "all") choose which
    recordings are used, so a training and a held-out set never share a recording. ``speaker``
    names the recorded voice and ``credit`` says whose recordings they are, under which licence
    (kept in ``meta.json``; ``talker export`` puts it in the model card). ``language`` is the
    recordings' language as an espeak-ng voice (``fr``, ``es``, ``ru``, ...): the pronunciations
    the aligner uses come from espeak-ng in that language.
    """
    from tqdm.auto import tqdm

    if resolution < 32 or resolution % 2:
        raise InputError(f"--resolution must be an even number ≥ 32; got {resolution}")
    workers = max(1, workers or os.cpu_count() or 1)
    skipped: list[dict] = []
    if speech is not None:
        from .align import find_recordings, read_transcripts

        if transcripts is None:
            raise InputError("recorded speech needs its transcripts (--transcripts FILE)")
        if split not in ("train", "heldout", "all"):
            raise InputError(f"split must be train, heldout or all; got {split!r}")
        if not 0 <= held_out < 1:
            raise InputError(f"--held-out must be a fraction in [0, 1); got {held_out}")
        try:
            ESpeak.get().check_voice(language)
        except TalkerError:
            raise InputError(f"--language {language!r}: espeak-ng has no such voice (e.g. en-us, fr, es, it, ru, de; "
                             "`espeak-ng --voices` lists them)") from None
        recordings, skipped = find_recordings(speech, read_transcripts(transcripts))
        if split != "all":
            recordings = [r for r in recordings if in_held_out(r.name, held_out) == (split == "heldout")]
        if not recordings:
            raise InputError("no recording with a transcript was found in --speech")
        aligned, failed = align_recordings(recordings, language=language, workers=workers, progress=progress)
        skipped += failed
        for s in failed:
            print(f"skipped {s['source']}: {s['reason']}")
        if not aligned:
            raise InputError("no recording could be aligned to its transcript")
        specs = plan_recorded_clips(aligned, clips=clips, seconds=seconds, seed=seed, emotion=emotion,
                                    voice=f"recorded:{speaker}" + ("" if language == ENGLISH else f":{language}"))
    else:
        for voice in voices:
            try:
                ESpeak.get().check_voice(voice)
            except TalkerError as e:
                raise InputError(f"--voices: {e}") from None
        specs = plan_clips(clips=clips, seconds=seconds, text_file=text_file, seed=seed, voices=voices, emotion=emotion)
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    workers = min(workers, len(specs))
    metas = []
    # every clip in a fresh process: espeak-ng's output depends on what it said before, so this
    # is what makes a clip the same whatever else is generated (forked from a server that has
    # the modules loaded, so a new process costs milliseconds)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["talker.data.synthetic"])
    with tqdm(total=len(specs), desc="synthesising clips", unit="clip", disable=not progress) as bar, \
            ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        for meta in pool.map(render_clip, specs, [str(out)] * len(specs), [resolution] * len(specs)):
            metas.append(meta)
            bar.update()
    index = {"speaker": "astronaut (scikit-image, public-domain NASA portrait)", "fps": FPS,
             "sampling_rate": SAMPLE_RATE, "resolution": resolution, "emotions": list(EMOTIONS),
             "visemes": list(VISEMES), "clips": metas, "skipped": skipped}
    if speech is not None:
        index["speech_credit"] = credit
        index["speech_language"] = language
    (out / "meta.json").write_text(json.dumps(index, indent=1) + "\n")
    return metas
