"""Text to speech with exact phoneme timings: libespeak-ng's C API through ctypes.

The ``espeak-ng`` command line prints phonemes but no times; the library's synthesis callback
reports every phoneme with the sample position where it starts, which is what the synthetic
speaker needs to move the lips in sync. Debian/Ubuntu: ``apt-get install espeak-ng``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, resample
from ..errors import TalkerError

# espeak_EVENT_TYPE
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_SENTENCE, _EVENT_END, _EVENT_PHONEME = 0, 1, 2, 5, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
# language codes whose voice file has another name (espeak-ng's "en-gb" is the file gmw/en)
_VOICE_ALIASES = {"en-gb": "en", "en-uk": "en"}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Phoneme:
    """One phoneme: IPA symbol(s), start and end in seconds, and whether it carries stress."""

    symbol: str
    start: float
    end: float
    stressed: bool = False


@dataclass
class Speech:
    """Speech with timings: 16 kHz mono float32 samples, its phonemes and word start times
    (synthesised, or recorded and force-aligned), and the text spoken."""

    audio: np.ndarray
    phonemes: list[Phoneme]
    words: list[float]
    text: str = ""

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class ESpeak:
    """A process-wide handle on libespeak-ng (the library is not re-entrant, hence the lock).

    espeak-ng keeps state from one utterance to the next (a repeated sentence comes out a few
    samples longer or shorter), and it cannot be re-initialised in the same process; what must be
    reproducible is synthesised in a fresh process (see ``synthetic.synth_dataset``).
    """

    _lock = threading.Lock()
    _instance: ESpeak | None = None

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise TalkerError(
                "libespeak-ng was not found; install it (Debian/Ubuntu: apt-get install espeak-ng)"
            ) from None
        self._chunks: list[np.ndarray] = []
        self._variants: list[str] | None = None
        self._events: list[tuple[int, int, str]] = []
        self._callback = _CALLBACK(self._on_synth)
        self._initialize()

    def _initialize(self) -> None:
        flags = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, flags)
        if rate <= 0:
            raise TalkerError("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.rate = rate
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]

    def variants(self) -> list[str]:
        """The voice variants this espeak-ng has (``f3``, ``klatt2``, ``Andy``, ...: the files in
        ``espeak-ng-data/voices/!v``; the names are case-sensitive)."""
        if self._variants is None:
            path = ctypes.c_char_p()
            self.lib.espeak_Info.restype = ctypes.c_char_p
            self.lib.espeak_Info(ctypes.byref(path))
            folder = Path(path.value.decode() if path.value else "") / "voices" / "!v"
            self._variants = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return self._variants

    def _check_variant(self, voice: str) -> None:
        """Raise a TalkerError listing the variants unless ``voice``'s variant (if any) exists:
        espeak-ng itself falls back to the plain language when a variant is missing."""
        variant = voice.partition("+")[2]
        if variant and variant not in self.variants():
            raise TalkerError(f"espeak-ng has no voice variant {variant!r} in {voice!r}; the variants (case-sensitive) are: "
                              + ", ".join(self.variants()))

    def check_voice(self, voice: str) -> None:
        """Raise a TalkerError naming what is accepted unless espeak-ng has ``voice`` (language and
        variant), without synthesising anything."""
        self._check_variant(voice)
        base = voice.partition("+")[0]
        with self._lock:
            known = self.lib.espeak_SetVoiceByName(_VOICE_ALIASES.get(base, base).encode()) == 0
        if not known:
            raise TalkerError(f"espeak-ng has no voice {base!r} (`espeak-ng --voices` lists them, e.g. en-us, en-gb, fr)")

    @classmethod
    def get(cls) -> ESpeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = ESpeak()
            return cls._instance

    def _on_synth(self, wav, numsamples, events):
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            name = ""
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
            self._events.append((ev.type, ev.sample, name))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> Speech:
        """Speak ``text``; returns 16 kHz audio with phoneme and word timings.

        Args:
            voice: an espeak-ng voice, optionally with a variant (``en-gb+f3``).
            rate: words per minute (80–450).
            pitch: base pitch 0–100 (50 = the voice's default).
        """
        self._check_variant(voice)
        base, plus, variant = voice.partition("+")
        name = _VOICE_ALIASES.get(base, base) + plus + variant
        with self._lock:
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise TalkerError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise TalkerError(f"espeak-ng failed to synthesise (error {err})")
            chunks, events = self._chunks, self._events
        audio = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
        audio = resample(audio, self.rate, SAMPLE_RATE)
        end = len(audio) / SAMPLE_RATE
        starts = [(s / self.rate, n) for t, s, n in events if t == _EVENT_PHONEME]
        phonemes = []
        for k, (start, name) in enumerate(starts):
            stop = starts[k + 1][0] if k + 1 < len(starts) else end
            stressed = "ˈ" in name
            symbol = name.replace("ˈ", "").replace("ˌ", "")
            if stop > start:
                phonemes.append(Phoneme(symbol, start, stop, stressed))
        words = [s / self.rate for t, s, _ in events if t == _EVENT_WORD]
        return Speech(audio, phonemes, words, text)


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> Speech:
    """Module-level shortcut for :meth:`ESpeak.synthesize`."""
    return ESpeak.get().synthesize(text, voice, rate, pitch)
