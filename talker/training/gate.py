"""``talker train gate``: the voice gate (:class:`talker.models.VoiceGate`).

Each training window (``window_seconds``) is one of two kinds, drawn with the step's seed:

- **a voice** (``1 - noise_share`` of them): a window of a training clip, through the same
  augmentation chain as speech2latent's (noise that fills the pauses, babble among it, rooms,
  phone lines, codecs, gain, pitch); the truth is the clip's own per-frame ``speaking`` (where its
  words are, from espeak-ng's timings or the forced alignment; for a speaker's own video, Silero
  VAD on its clean sound);
- **no voice** (``noise_share``): noise alone at a random level, babble (3–8 other clips at
  once, each played at its own speed within ``babble_speeds``: more people than the recordings
  hold) in ``babble_share`` of them, else white, pink or brown noise or hum; the truth is 0
  everywhere. ``one_voice_babble`` of the babble is made of one voice's clips only (people who
  sound alike), so that the gate learns a crowd by its several voices at once, not by a mix of
  timbres that one speaker does not have.

Besides prepared datasets, folders of recorded speech with no transcript and no video
(``speech``: any language, any person) add voices, to speak and to make babble of: their
recordings are joined into clips of about ``RECORDED_CLIP_SECONDS`` with short gaps, the truth
from Silero VAD; the recordings that ``talker synth --held-out`` of ``speech_held_out`` holds out
(a hash of their names) are left out, so the gate never hears the prompts of a held-out set.

The loss is binary cross-entropy per video frame; a moving average of the weights
(``ema_decay``) is what is scored and kept, so the kept step is not one swing of the boundary
between speech in babble and babble alone. Held-out clips (whole clips, ``held_out``)
score: the share of their speaking frames the gate passes (P ≥ 0.5) as they are and with babble
at 10 dB SNR, the share of their pause frames it shuts, and the share of frames of 10 s of babble
alone (made of other held-out clips, at a speech-like level) and of babble of the clip's own voice
(its held-out clips, itself among them) that it shuts; the step with the best mean of the five is
kept (``RUN/voice_gate``, ``RUN/best.json``). Checkpoints and ``--resume``
as for the other stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLES_PER_FRAME
from ..data.align import SPEECH_FILE_TYPES, find_recordings
from ..defaults import FPS, NOISE_TEST_LEVEL_DBFS, SAMPLE_RATE
from ..errors import TalkerError
from .augment import Augmenter, add_noise, make_noise, speech_power
from .configs import GateConfig
from .data import load_dataset, split_clips
from .runs import TrainingRun, ema_weights, moving_average

NOISE_ALONE_KINDS = ("white", "pink", "brown", "hum")
RECORDED_CLIP_SECONDS = 12.0


@dataclass
class Voice:
    """One clip for the gate: 16 kHz audio, its per-frame speaking truth (0/1) and whose voice
    it is (``talker``: clips of one talker make one-voice babble)."""

    id: str
    audio: np.ndarray
    speaking: np.ndarray
    talker: str


def load_voices(data_dirs: list[str | Path]) -> list[Voice]:
    """Every clip of the prepared datasets, with per-frame speaking truth:
    the truth of ``talker synth`` clips (``truth.npz``: where the words are), else, for a
    speaker's own recordings, Silero VAD on the clip's clean audio (P(speech) ≥ 0.5)."""
    from ..vad import speech_probability
    from .export import clip_voices

    out = []
    for d in data_dirs:
        index, clips = load_dataset(d)
        talkers = clip_voices(index)
        for c in clips:
            audio = c.audio[: c.n_frames * SAMPLES_PER_FRAME]
            path = c.path / "truth.npz"
            speaking = None
            if path.is_file():
                with np.load(path) as truth:
                    if "speaking" in truth:
                        speaking = truth["speaking"][: c.n_frames].astype(np.float32)
            if speaking is None:
                speaking = (speech_probability(audio, c.n_frames, c.n_frames).numpy() >= 0.5).astype(np.float32)
            out.append(Voice(c.id, audio, speaking, f"{d}:{talkers[c.id]['voice']}"))
    return out


def load_recorded_voices(folder: str | Path, held_out: float, seed: int = 0, progress: bool = True,
                         skipped: list[dict] | None = None) -> list[Voice]:
    """The recordings with no transcript in ``folder`` (or one file; module docstring) as clips of
    about ``RECORDED_CLIP_SECONDS``: the training part of a ``held_out`` split by name, in a seeded
    order, 0.3–1.0 s of silence before each recording and at the end; truth: Silero VAD
    P(speech) ≥ 0.5. Files that cannot be read are left out and appended to ``skipped``
    ({source, reason})."""
    from tqdm.auto import tqdm

    from ..audio import load_audio
    from ..data.synthetic import in_held_out
    from ..vad import speech_probability

    recordings, unreadable = find_recordings([folder], None)
    if skipped is not None:
        skipped += unreadable
    recordings = [r for r in recordings if not in_held_out(r.name, held_out)]
    if not recordings:
        raise TalkerError(f"{folder}: no recordings to train on (audio files: "
                          f"{', '.join(SPEECH_FILE_TYPES)}; the held-out part is left out)")
    rng = np.random.default_rng([seed, 0])
    groups: list[list[np.ndarray]] = [[]]
    length = 0
    for k in tqdm(rng.permutation(len(recordings)), desc=f"reading {Path(folder).name}", unit="file",
                  disable=not progress):
        audio = load_audio(recordings[k].path)
        if groups[-1] and length + len(audio) > RECORDED_CLIP_SECONDS * SAMPLE_RATE:
            groups.append([])
            length = 0
        gap = np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE), np.float32)
        groups[-1] += [gap, audio]
        length += len(gap) + len(audio)
    out = []
    for i, group in enumerate(groups):
        audio = np.concatenate([*group, group[0]])  # the clip's first gap again at its end
        n = len(audio) // SAMPLES_PER_FRAME
        audio = audio[: n * SAMPLES_PER_FRAME]
        speaking = (speech_probability(audio, n, n).numpy() >= 0.5).astype(np.float32)
        out.append(Voice(f"{folder}:{i:04d}", audio, speaking, str(folder)))  # ids unique per folder given
    return out


def voice_window(audio: np.ndarray, speaking: np.ndarray, frames: int, rng: np.random.Generator):
    """A ``frames``-frame window of a clip (zero-padded at its end) and its truth."""
    n = frames * SAMPLES_PER_FRAME
    start = int(rng.integers(0, max(1, len(speaking) - frames + 1)))
    x = audio[start * SAMPLES_PER_FRAME : start * SAMPLES_PER_FRAME + n]
    y = speaking[start : start + frames]
    return np.pad(x, (0, n - len(x))).astype(np.float32), np.pad(y, (0, frames - len(y))).astype(np.float32)


def one_voice(voices: list[Voice], talker: str) -> list[np.ndarray]:
    """The audio of ``talker``'s clips among ``voices``."""
    return [v.audio for v in voices if v.talker == talker]


def draw_example(voices: list[Voice], augmenter: Augmenter, cfg: GateConfig, rng: np.random.Generator):
    """One training window: (samples, per-frame truth)."""
    frames = round(cfg.window_seconds * FPS)
    n = frames * SAMPLES_PER_FRAME
    if rng.random() < cfg.noise_share:
        kind = "babble" if rng.random() < cfg.babble_share else str(rng.choice(NOISE_ALONE_KINDS))
        level = float(rng.uniform(-50.0, -12.0))
        sources = augmenter.babble_sources
        if kind == "babble" and rng.random() < cfg.one_voice_babble:
            sources = one_voice(voices, voices[int(rng.integers(len(voices)))].talker)
        x = make_noise(kind, n, rng, sources, babble_speeds=cfg.babble_speeds) * 10 ** (level / 20)
        return np.clip(x, -1, 1).astype(np.float32), np.zeros(frames, np.float32)
    voice = voices[int(rng.integers(len(voices)))]
    x, y = voice_window(voice.audio, voice.speaking, frames, rng)
    return augmenter(x, rng, reference_power=speech_power(voice.audio)), y


def babble_shut(model, sources: list[np.ndarray], rng: np.random.Generator, seconds: float = 10.0) -> np.ndarray:
    """Per frame, whether the gate shuts ``seconds`` of babble alone made of ``sources`` (3–8 at
    once, at a speech-like level)."""
    x = make_noise("babble", int(seconds * SAMPLE_RATE), rng, sources) * 10 ** (NOISE_TEST_LEVEL_DBFS / 20)
    return model.probability(x, int(seconds * FPS)).numpy() < 0.5


def evaluate_gate(model, voices, seed: int, seconds: float = 10.0) -> dict:
    """The held-out figures (module docstring) and their mean, ``score``."""
    model.eval()
    sources = [v.audio for v in voices]
    passed, passed_noisy, shut_pauses, shut_babble, shut_one_voice = [], [], [], [], []
    for k, voice in enumerate(voices):
        audio, speaking = voice.audio, voice.speaking
        n = len(speaking)
        others = [a for j, a in enumerate(sources) if j != k] or sources
        noisy = add_noise(audio, make_noise("babble", len(audio), np.random.default_rng([seed, k]), others), 10.0)
        p = model.probability(audio, n).numpy()
        q = model.probability(noisy, n).numpy()
        talk = speaking > 0.5
        passed.append(p[talk] >= 0.5)
        passed_noisy.append(q[talk] >= 0.5)
        shut_pauses.append(p[~talk] < 0.5)
        shut_babble.append(babble_shut(model, others, np.random.default_rng([seed, 1, k]), seconds))
        shut_one_voice.append(babble_shut(model, one_voice(voices, voice.talker), np.random.default_rng([seed, 3, k]),
                                          seconds))
    model.train()
    scores = {name: float(np.concatenate(v).mean()) for name, v in
              (("speech_passed", passed), ("speech_in_babble_passed", passed_noisy),
               ("pauses_shut", shut_pauses), ("babble_alone_shut", shut_babble),
               ("one_voice_babble_shut", shut_one_voice))}
    scores["score"] = float(np.mean(list(scores.values())))
    return scores


def gate_speech(data_dirs: list[str | Path]) -> list[dict]:
    """The voices of the datasets, with minutes and credit (as speaker.json lists speech2latent's)."""
    from .export import speech_sources

    rows: dict[str, dict] = {}
    for d in data_dirs:
        for r in speech_sources(load_dataset(d)[0]):
            row = rows.setdefault(r["voice"], {**r, "minutes": 0.0})
            row["minutes"] = round(row["minutes"] + r["minutes"], 2)
    return sorted(rows.values(), key=lambda r: -r["minutes"])


def train_gate(data_dirs: list[str | Path], run_dir: str | Path, cfg: GateConfig, resume: bool = False,
               progress: bool = True, speech: list[str | Path] = (), speech_credit: str | None = None) -> dict:
    """Train (or resume) a voice gate on the clips of ``data_dirs`` and the recordings in
    ``speech`` (module docstring; ``speech_credit`` names their source for the model card);
    returns its figures."""

    from ..frontends import log_mel
    from ..models import VoiceGate

    run = TrainingRun(run_dir, cfg, resume, "train gate", progress)
    cfg = run.cfg
    voices = load_voices(data_dirs) if data_dirs else []
    recorded = []  # the --speech folders' rows for the model card
    for folder in speech:
        unreadable: list[dict] = []
        clips = load_recorded_voices(folder, cfg.speech_held_out, cfg.seed, progress, unreadable)
        voices += clips
        recorded.append({"voice": f"recorded:{Path(folder).name}", "credit": speech_credit or f"recordings in {folder}",
                         "minutes": round(sum(len(v.audio) for v in clips) / SAMPLE_RATE / 60, 2),
                         **({"unreadable": unreadable} if unreadable else {})})
    if len(voices) < 2:
        raise TalkerError(f"the voice gate needs at least 2 clips (one to hold out); found {len(voices)} in "
                          f"{', '.join(map(str, [*data_dirs, *speech])) or 'nothing (give --data or --speech)'}")
    by_id = {v.id: v for v in voices}
    train_ids, held_ids = split_clips(list(by_id), cfg.held_out)
    train, held = [by_id[i] for i in train_ids], [by_id[i] for i in held_ids]
    augmenter = Augmenter(babble_sources=[v.audio for v in train])
    model = VoiceGate(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, bidirectional=cfg.bidirectional)
    ema = moving_average(model.parameters(), cfg.ema_decay)
    model, optimizer = run.start(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr), ema)
    unwrapped = run.accelerator.unwrap_model(model)
    best_path = run.path / "best.json"
    best = json.loads(best_path.read_text()) if best_path.is_file() else {"score": -1.0}
    scores: dict = {}
    model.train()
    for _ in run.steps():
        rng = run.rng()
        batch = [draw_example(train, augmenter, cfg, rng) for _ in range(cfg.batch_size)]
        mel = torch.stack([log_mel(x, len(y)) for x, y in batch]).to(run.device)
        truth = torch.from_numpy(np.stack([y for _, y in batch])).to(run.device)
        with run.accelerator.autocast():
            logits = model(mel)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), truth)
        run.update(loss, model, optimizer)
        if run.is_main and run.due(cfg.eval_every):
            with ema_weights(ema, unwrapped.parameters()):
                scores = evaluate_gate(unwrapped, held, cfg.seed)
                run.note(**scores)
                if scores["score"] > best["score"]:
                    best = {"step": run.step, **scores}
                    unwrapped.save_pretrained(run.path / "voice_gate")
                    best_path.write_text(json.dumps(best, indent=1) + "\n")
        run.end_step()
    figures = run.figures(train_clips=len(train), heldout_clips=len(held), best=best, last=scores,
                          speech=gate_speech(data_dirs) + recorded)
    return run.finish(figures)


__all__ = ["Voice", "babble_shut", "draw_example", "evaluate_gate", "load_recorded_voices", "load_voices", "one_voice",
           "train_gate"]
