"""Audio augmentation for speech2latent training: what real microphones, rooms and phones do.

The speaker's training speech is clean (TTS, studio prompts); users record in rooms, on phones,
with noise between their sentences. Each training window is passed through a random chain
(every choice drawn from a ``numpy.random.Generator``, so a step's augmentation is a function of
the run's seed and the step: resuming repeats it exactly):

    speed (pitch and tempo together, targets stretched to match) → pitch (tempo kept)
    → reverberation → noise that also fills the pauses (pink, brown, hum, babble) at an SNR
    → telephone band / 8 kHz round trip → mp3 / AAC / Opus round trip → gain (with clipping)

DSP comes from scipy (filters, convolution), soxr (resampling) and FFmpeg through PyAV (codecs,
``atempo``). Everything works on 16 kHz mono float32.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE, SAMPLES_PER_FRAME, resample


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation (one source for the defaults)."""

    p_speed: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor: pitch and tempo together
    p_pitch: float = 0.3
    pitch_semitones: tuple[float, float] = (-4.0, 4.0)
    p_reverb: float = 0.35
    rt60: tuple[float, float] = (0.15, 0.9)  # seconds
    p_noise: float = 0.75
    snr_db: tuple[float, float] = (5.0, 40.0)
    p_telephone: float = 0.25
    p_codec: float = 0.2
    gain_db: tuple[float, float] = (-20.0, 20.0)


NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def speech_power(x: np.ndarray, frame: int = 400) -> float:
    """Mean power of the active part of ``x`` (frames within 30 dB of the loudest), so that an
    SNR means the same for a clip with long pauses as for one without."""
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x**2) + 1e-12)
    p = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    active = p[p >= p.max() * 1e-3]
    return float(active.mean() + 1e-12)


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    spec *= np.maximum(f, 20.0) ** (-exponent / 2)
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics with random levels and phases, plus a little hiss."""
    t = np.arange(n) / SAMPLE_RATE
    base = rng.choice([50.0, 60.0])
    x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 8))
    x = x + 0.05 * rng.standard_normal(n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def babble(n: int, rng: np.random.Generator, sources: list[np.ndarray], talkers: tuple[int, int] = (3, 8),
           speeds: float = 0.0) -> np.ndarray:
    """Several other utterances summed (a room of people talking), unit RMS. ``speeds`` > 0 plays
    each talker at its own speed in [1 - speeds, 1 + speeds] (pitch, formants and tempo move
    together: another person, as far as a spectrum can tell), so a few recorded voices make many."""
    x = np.zeros(n, np.float32)
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        src = sources[int(rng.integers(len(sources)))]
        speed = float(rng.uniform(1 - speeds, 1 + speeds)) if speeds > 0 else 1.0
        m = max(1, round(n * speed))
        if len(src) >= m:
            start = int(rng.integers(0, len(src) - m + 1))
            seg = src[start : start + m]
        else:
            seg = np.resize(src, m)
        if m != n:
            seg = np.resize(resample(seg, m, n), n)
        x += seg / (np.sqrt(np.mean(seg**2)) + 1e-6)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def make_noise(kind: str, n: int, rng: np.random.Generator, sources: list[np.ndarray] | None = None,
               babble_speeds: float = 0.0) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (one of NOISE_KINDS); babble needs ``sources`` (its talkers'
    speeds vary by ``babble_speeds``: :func:`babble`)."""
    if kind == "white":
        return colored_noise(n, rng, 0.0)
    if kind == "pink":
        return colored_noise(n, rng, 1.0)
    if kind == "brown":
        return colored_noise(n, rng, 2.0)
    if kind == "hum":
        return hum(n, rng)
    if kind == "babble":
        if not sources:
            raise ValueError("babble noise needs source recordings")
        return babble(n, rng, sources, speeds=babble_speeds)
    raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}; got {kind!r}")


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float, reference_power: float | None = None) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that speech power / noise power = ``snr_db``; the noise runs
    through the whole clip, pauses included. ``reference_power``: the speech power to use (for a
    stretch of silence, the power of the speech around it)."""
    power = speech_power(x) if reference_power is None else reference_power
    scale = np.sqrt(power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    return (x + scale * noise[: len(x)]).astype(np.float32)


def room_impulse_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room: direct path, a few early reflections, then exponentially decaying
    noise with reverberation time ``rt60`` seconds (60 dB decay)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    onset = int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)
    tail[:onset] = 0
    h = tail * rng.uniform(0.1, 0.4)
    for _ in range(4):
        h[int(rng.integers(onset, max(onset + 1, min(n, int(0.04 * SAMPLE_RATE)))))] += rng.uniform(0.2, 0.6)
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x, rir)[: len(x)]
    return (y * np.sqrt(np.mean(x**2) / (np.mean(y**2) + 1e-12))).astype(np.float32)


def telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone line: 300–3400 Hz band and an 8 kHz round trip (or only the 8 kHz round trip)."""
    from scipy.signal import butter, sosfilt

    y = resample(resample(x, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[: len(x)]
    if rng.random() < 0.7:
        sos = butter(4, [rng.uniform(200, 400), rng.uniform(3000, 3500)], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        y = sosfilt(sos, y)
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


_CODECS = {"mp3": ("mp3", "libmp3lame", "s16p"), "aac": ("adts", "aac", "fltp"), "opus": ("ogg", "libopus", "flt")}


def codec_round_trip(x: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """Encode with ``codec`` (mp3, aac or opus) at ``bitrate`` bit/s and decode again (PyAV),
    with the codec's delay removed so that the audio stays in sync with its frames."""
    import av

    fmt, name, sample_fmt = _CODECS[codec]
    rate = 48000 if codec == "opus" else SAMPLE_RATE
    src = resample(x, SAMPLE_RATE, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(name, rate=rate)
        stream.bit_rate = bitrate
        stream.layout = "mono"
        frame_size = stream.codec_context.frame_size or 1024
        samples = np.clip(src, -1, 1)
        for i in range(0, len(samples), frame_size):
            chunk = samples[i : i + frame_size]
            if sample_fmt == "s16p":
                frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None], format="s16p", layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32)[None], format=sample_fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r", format=fmt) as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return align_to(y, x)


def align_to(y: np.ndarray, x: np.ndarray, max_lag: int = 4000) -> np.ndarray:
    """``y`` shifted by the lag (0..max_lag samples) that best matches ``x``, cut/padded to len(x)."""
    n = len(x)
    m = min(len(y), n + max_lag)
    if m == 0:
        return np.zeros(n, np.float32)
    size = 1 << int(np.ceil(np.log2(n + m)))
    corr = np.fft.irfft(np.fft.rfft(y[:m], size) * np.conj(np.fft.rfft(x, size)), size)[: max_lag + 1]
    lag = int(np.argmax(corr)) if np.any(x) else 0
    out = y[lag : lag + n]
    return np.pad(out, (0, n - len(out))).astype(np.float32)


def change_tempo(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times as fast without changing its pitch (FFmpeg's atempo, PyAV)."""
    import av

    graph = av.filter.Graph()
    src = graph.add_abuffer(format="flt", sample_rate=SAMPLE_RATE, layout="mono", time_base=f"1/{SAMPLE_RATE}")
    tempo = graph.add("atempo", f"{factor:.6f}")
    sink = graph.add("abuffersink")
    src.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    graph.push(frame)
    graph.push(None)
    chunks = []
    while True:
        try:
            chunks.append(graph.pull().to_ndarray().reshape(-1))
        except (av.error.EOFError, av.error.BlockingIOError):
            break
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` keeping the duration: resample (pitch and tempo) then
    atempo back to the original tempo."""
    ratio = 2 ** (semitones / 12)
    faster = resample(x, int(round(SAMPLE_RATE * ratio)), SAMPLE_RATE)  # played ``ratio`` times as fast
    y = change_tempo(faster, 1 / ratio)
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)].astype(np.float32)


def pause_runs(audio: np.ndarray, samples_per_frame: int, min_frames: int = 8, below_db: float = 30.0,
               trim: int = 2) -> list[tuple[int, int]]:
    """Runs of frames (start, end) at least ``min_frames`` long (after trimming ``trim`` frames at
    each end, away from speech) whose level stays ``below_db`` under the clip's loudest frame."""
    n = len(audio) // samples_per_frame
    rms = np.sqrt(np.mean(audio[: n * samples_per_frame].reshape(n, samples_per_frame) ** 2, axis=1))
    quiet = rms <= rms.max() * 10 ** (-below_db / 20) if n else np.zeros(0, bool)
    runs, k = [], 0
    while k < n:
        if quiet[k]:
            j = k
            while j < n and quiet[j]:
                j += 1
            a, b = k + trim, j - trim
            if b - a >= min_frames:
                runs.append((a, b))
            k = j
        else:
            k += 1
    return runs


def ping_pong(start: int, end: int, count: int, offset: int = 0) -> np.ndarray:
    """``count`` frame indices moving back and forth over [start, end) (continuous motion)."""
    length = end - start
    period = max(1, 2 * length - 2)
    k = (np.arange(count) + offset) % period
    return start + np.where(k < length, k, period - k)


def pause_window(audio: np.ndarray, run: tuple[int, int], count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames going back and forth over the pause ``run`` (``pause_runs``): their indices
    and their 16 kHz audio, cut frame by frame."""
    idx = ping_pong(run[0], run[1], count, offset)
    return idx, np.concatenate([audio[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME] for i in idx])


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times as fast (pitch and tempo together): len(x) / factor samples."""
    return resample(x, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE)


class Augmenter:
    """The training chain. ``babble_sources`` are other recordings (16 kHz) for babble noise.

    ``speed_factor(rng)`` is drawn first by the caller, who needs it to cut a window of
    ``window × factor`` seconds and stretch the targets; ``__call__`` does the rest.
    """

    def __init__(self, cfg: AugmentConfig | None = None, babble_sources: list[np.ndarray] | None = None):
        self.cfg = cfg or AugmentConfig()
        self.babble_sources = [s for s in (babble_sources or []) if len(s) > SAMPLE_RATE // 2]

    def speed_factor(self, rng: np.random.Generator) -> float:
        c = self.cfg
        return float(rng.uniform(*c.speed)) if rng.random() < c.p_speed else 1.0

    def __call__(self, x: np.ndarray, rng: np.random.Generator, reference_power: float | None = None,
                 noise_kind: str | None = None) -> np.ndarray:
        """Augment 16 kHz ``x``; ``reference_power`` sets the speech level that the SNR and the gain
        refer to (for a window of silence, the power of the speech it was cut from); ``noise_kind``
        (one of NOISE_KINDS) always adds that noise instead of drawing whether and which."""
        c = self.cfg
        if noise_kind is not None and noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}; got {noise_kind!r}")
        y = x.astype(np.float32)
        if rng.random() < c.p_pitch:
            y = pitch_shift(y, float(rng.uniform(*c.pitch_semitones)))
        if rng.random() < c.p_reverb:
            y = reverberate(y, room_impulse_response(rng, float(rng.uniform(*c.rt60))))
        if noise_kind is not None or rng.random() < c.p_noise:
            kinds = NOISE_KINDS if self.babble_sources else NOISE_KINDS[:-1]
            kind = noise_kind or str(rng.choice(kinds))
            y = add_noise(y, make_noise(kind, len(y), rng, self.babble_sources), float(rng.uniform(*c.snr_db)),
                          reference_power)
        if rng.random() < c.p_telephone:
            y = telephone(y, rng)
        if rng.random() < c.p_codec:
            codec = str(rng.choice(list(_CODECS)))
            y = codec_round_trip(y, codec, int(rng.choice([24000, 32000, 64000])))
        # speech peaks at -10 dBFS ± the gain (a window of silence keeps its level relative to its speech)
        peak = np.abs(x).max() if reference_power is None else 4 * np.sqrt(reference_power)
        y = y / (peak + 1e-9) * 0.3 * 10 ** (float(rng.uniform(*c.gain_db)) / 20)
        return np.clip(y, -1.0, 1.0).astype(np.float32)
