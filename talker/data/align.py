"""Forced alignment of recorded speech to its transcript: word and phone timings.

Recorded speech drives the synthetic speaker the way espeak-ng's phoneme events do
(``synthetic.py``): each phone becomes a viseme at the time it is spoken. The aligner is
pocketsphinx (CMU Sphinx), whose US-English acoustic model and pronouncing dictionary ship in
its PyPI wheel, so alignment works offline. Two passes over the same 16 kHz PCM: the first
decodes the transcript as a fixed grammar (word times), the second (``set_alignment``) gives
phone-level segments inside every word.

Words missing from the dictionary get a pronunciation from espeak-ng (its IPA phonemes mapped
to ARPAbet); when that fails too, the prompt is reported and skipped, never guessed.

Speech in another language (``language``: an espeak-ng voice such as ``fr`` or ``ru``) is aligned
the same way with every word's pronunciation from espeak-ng in that language, mapped to the
nearest ARPAbet phones: the English acoustic model then places approximate phones, which is what
the face needs (when the lips close, open and round), not a phonetic transcription.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import AUDIO_FILE_TYPES, SAMPLE_RATE, decode_audio_file, load_audio
from ..defaults import SPEECH_LANGUAGE as ENGLISH
from ..errors import AudioError, TalkerError
from .tts import Phoneme, Speech

ALIGN_FRAME = 0.01
"""pocketsphinx's frame period in seconds (100 frames/s)."""
ALIGN_PAD = 0.25
"""Seconds of silence put before and after a recording for the aligner: its second (phone) pass
fails on speech that starts or ends within ~0.1 s of the file's edge (as text-to-speech output and
tightly trimmed recordings do)."""

# ARPAbet (the CMU dictionary's phone set) → IPA, so that aligned phones go through the same
# viseme table as espeak-ng's (``synthetic.viseme_of``) and the truth files hold one alphabet.
ARPABET_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ", "D": "d",
    "DH": "ð", "EH": "ɛ", "ER": "ɝ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ", "IY": "i",
    "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ", "P": "p",
    "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "UH": "ʊ", "UW": "u", "V": "v", "W": "w",
    "Y": "j", "Z": "z", "ZH": "ʒ", "SIL": "_",
}
# espeak-ng's IPA → ARPAbet, longest symbols first (diphthongs and affricates before their parts)
_IPA_ARPABET = sorted({
    **{v: k for k, v in ARPABET_IPA.items() if k != "SIL"},
    "a": "AA", "ɐ": "AH", "ə": "AH", "ɚ": "ER", "ɜ": "ER", "e": "EH", "o": "OW", "ɒ": "AA", "r": "R",
    "ɾ": "T", "ʔ": "T", "g": "G", "x": "K", "ɬ": "L", "i": "IY", "ɪ": "IH", "əʊ": "OW", "eə": "EH",
    "ɪə": "IH", "ʊə": "UH", "aɪə": "AY", "oː": "OW", "y": "IY", "ɫ": "L", "ɹ": "R", "ʍ": "W", "ç": "HH",
    # other languages' sounds (espeak-ng's es, fr, it, ru, de, ...), by the nearest English mouth shape
    "β": "B", "ɣ": "G", "ʝ": "Y", "ʎ": "L", "ɲ": "N", "ʁ": "R", "ʀ": "R", "χ": "HH", "ɦ": "HH", "ɭ": "L",
    "ɨ": "IH", "ɵ": "OW", "ø": "UW", "œ": "ER", "ɶ": "AA", "ʏ": "UH", "ɤ": "AH", "ɯ": "UW", "ɥ": "W",
    "ʋ": "V", "ɕ": "SH", "ʑ": "ZH", "c": "K", "ɟ": "G", "ɱ": "M", "ɳ": "N", "ʂ": "SH", "ʐ": "ZH",
    "ɸ": "F", "ɐ̃": "AH",
}.items(), key=lambda kv: -len(kv[0]))

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
         "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"#": "pound", "*": "star", "&": "and", "%": "percent", "@": "at", "+": "plus"}


class AlignmentError(TalkerError):
    """A recording could not be aligned to its transcript."""


def number_words(n: int) -> list[str]:
    """English words of a non-negative integer below one million (``123`` → one hundred twenty three)."""
    if n < 20:
        return [_UNITS[n]]
    if n < 100:
        return [_TENS[n // 10]] + (number_words(n % 10) if n % 10 else [])
    if n < 1000:
        return number_words(n // 100) + ["hundred"] + (number_words(n % 100) if n % 100 else [])
    if n < 1_000_000:
        return number_words(n // 1000) + ["thousand"] + (number_words(n % 1000) if n % 1000 else [])
    return [w for d in str(n) for w in number_words(int(d))]


def transcript_words(text: str, language: str = ENGLISH) -> list[str]:
    """A transcript as the aligner's words: lower case, numbers and symbols spelt out,
    punctuation dropped (apostrophes inside words kept). In another ``language`` words are
    letters of any script, and numbers stay digits (espeak-ng reads them in that language)."""
    if language != ENGLISH:
        return [w.lower() for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", text)]
    words = []
    for token in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*|\d+|[#*&%@+]", text):
        if token.isdigit():
            words += number_words(int(token))
        elif token in _SYMBOLS:
            words.append(_SYMBOLS[token])
        else:
            words.append(token.lower())
    return words


def ipa_to_arpabet(ipa: Iterable[str]) -> list[str]:
    """espeak-ng phoneme symbols (IPA, one or more characters each) → ARPAbet phones."""
    phones = []
    for symbol in ipa:
        s = symbol.replace("ː", "").replace("ˑ", "").replace("ˈ", "").replace("ˌ", "").strip()
        while s:
            if s[0] in "_ ":
                s = s[1:]
                continue
            for k, v in _IPA_ARPABET:
                if s.startswith(k):
                    phones.append(v)
                    s = s[len(k):]
                    break
            else:
                s = s[1:]  # diacritics and symbols without an ARPAbet counterpart
    return phones


@dataclass
class Alignment:
    """A recording aligned to its transcript: 16 kHz audio, phones (IPA, seconds), word starts."""

    speech: Speech
    words: list[tuple[str, float, float]]  # (word, start s, end s), silences excluded


class ForcedAligner:
    """pocketsphinx forced alignment with the en-us model that ships in its wheel.

    Args:
        language: the speech's language as an espeak-ng voice (``en-us``, ``fr``, ``es``, ``ru``,
            ...); other than English, pronunciations come from espeak-ng in that voice.
    """

    def __init__(self, language: str = ENGLISH):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise TalkerError("alignment needs pocketsphinx: pip install pocketsphinx") from None
        self.language = language
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self._keys: dict[str, str] = {}  # word → its entry in the decoder's dictionary (other languages)

    def key(self, word: str) -> str:
        """The dictionary entry that ``word`` is aligned as: the word itself in English; an ASCII
        name of its own in another language (so that Spanish "me" is not English "me")."""
        return self._keys.get(word, word)  # English words have no entry of their own

    def pronunciation(self, word: str) -> str | None:
        """The dictionary's phones of ``word`` ("HH AH L OW"), else espeak-ng's (always espeak-ng's
        in another language), added to the dictionary; None when neither knows the word."""
        if self.language == ENGLISH:
            phones = self.decoder.lookup_word(word)
            if phones:
                return phones
        elif word in self._keys:
            return self.decoder.lookup_word(self._keys[word])
        try:
            from .tts import synthesize

            arpabet = ipa_to_arpabet(p.symbol for p in synthesize(word, voice=self.language).phonemes)
        except TalkerError:
            return None
        if not arpabet:
            return None
        phones = " ".join(arpabet)
        if self.language != ENGLISH:
            self._keys[word] = f"w{len(self._keys)}_{re.sub(r'[^a-z]', '', self.language.lower())}"
        self.decoder.add_word(self.key(word), phones, True)
        return phones

    def align(self, audio: np.ndarray, text: str) -> Alignment:
        """Align 16 kHz mono float32 ``audio`` to ``text``.

        Raises:
            AlignmentError: no words in the transcript, a word without a pronunciation, or a
                recording the aligner cannot fit to the transcript.
        """
        words = transcript_words(text, self.language)
        if not words:
            raise AlignmentError(f"no words in the transcript {text!r}")
        unknown = [w for w in words if self.pronunciation(w) is None]
        if unknown:
            raise AlignmentError(f"no pronunciation for {', '.join(sorted(set(unknown)))}")
        pad = np.zeros(round(ALIGN_PAD * SAMPLE_RATE), np.int16)
        pcm = np.concatenate([pad, (np.clip(audio, -1, 1) * 32767).astype(np.int16), pad]).tobytes()
        d = self.decoder
        try:
            d.set_align_text(" ".join(self.key(w) for w in words))
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            if d.hyp() is None:
                raise AlignmentError("the recording does not fit its transcript")
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            alignment = d.get_alignment()
        except RuntimeError as e:
            from pocketsphinx import Decoder

            self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")  # a failed utterance can leave it unusable
            self._keys = {}
            raise AlignmentError(f"alignment failed ({e})") from None
        if alignment is None:
            raise AlignmentError("the recording does not fit its transcript")
        spoken = {self.key(w): w for w in words}
        duration = len(audio) / SAMPLE_RATE
        phonemes, word_spans = [], []
        for w in alignment:
            name = re.sub(r"\(\d+\)$", "", w.name)
            start, end = w.start * ALIGN_FRAME - ALIGN_PAD, (w.start + w.duration) * ALIGN_FRAME - ALIGN_PAD
            if name not in ("<s>", "</s>", "<sil>") and not name.startswith("++"):
                word_spans.append((spoken.get(name, name), min(max(start, 0.0), duration), min(max(end, 0.0), duration)))
            for p in w:
                ipa = ARPABET_IPA.get(p.name, "_")
                phonemes.append(Phoneme(ipa, p.start * ALIGN_FRAME - ALIGN_PAD,
                                        (p.start + p.duration) * ALIGN_FRAME - ALIGN_PAD))
        if len(word_spans) != len(words):
            raise AlignmentError(f"aligned {len(word_spans)} of {len(words)} words")
        phonemes = [Phoneme(p.symbol, max(p.start, 0.0), min(p.end, duration), p.stressed) for p in phonemes
                    if p.start < duration and p.end > 0]
        return Alignment(Speech(audio.astype(np.float32), phonemes, [s for _, s, _ in word_spans], text), word_spans)


# ----------------------------------------------------------------------------------------------
# Recordings and their transcripts
# ----------------------------------------------------------------------------------------------

SPEECH_FILE_TYPES = (*AUDIO_FILE_TYPES, "g722", "gsm")  # and the telephone prompt formats (Asterisk)


def read_transcripts(path: str | Path) -> dict[str, str]:
    """``name: text`` (or ``name<TAB>text``) lines → {name: text}; plain or .gz.

    ``name`` is the recording's path without its extension, relative to any folder
    (``digits/7`` matches ``.../sounds/digits/7.wav``). Lines starting with ``;`` or ``#`` are
    comments; lines whose text is a description in brackets (``beep: [a beep tone]``) are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise TalkerError(f"transcript file not found: {p}")
    raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    out = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith((";", "#")):
            continue
        m = re.match(r"([^:\t]+?)\s*[:\t]\s*(.*)$", line)
        if not m:
            continue
        name, text = m.group(1).strip(), m.group(2).strip()
        if text and not (text.startswith("[") and text.endswith("]")):
            out[name] = text
    if not out:
        raise TalkerError(f"{p}: no transcripts found (expected 'name: text' lines)")
    return out


@dataclass
class Recording:
    """One recorded prompt: its transcript key, file and text."""

    name: str
    path: Path
    text: str


def find_recordings(paths: Iterable[str | Path],
                    transcripts: dict[str, str] | None) -> tuple[list[Recording], list[dict]]:
    """Files (or folders, searched recursively) matched to transcripts by their path tail; with
    ``transcripts`` None, every file is a recording named by its path inside the folder given
    (``digits/1`` for ``FOLDER/digits/1.wav``; a file given alone by its stem), text empty.

    When one prompt exists in several files (``.wav`` at 8 kHz and ``.g722`` at 16 kHz), the one
    with the highest sampling rate is taken. Returns (recordings sorted by name, skipped files
    with the reason).
    """
    files: list[tuple[Path, str]] = []  # (file, its name when there are no transcripts)
    for given in paths:
        p = Path(given)
        if p.is_dir():
            files += [(f, f.relative_to(p).with_suffix("").as_posix()) for f in sorted(p.rglob("*"))
                      if f.suffix.lower().lstrip(".") in SPEECH_FILE_TYPES]
        elif p.is_file():
            files.append((p, p.stem))
        else:
            raise TalkerError(f"speech file or folder not found: {p}")
    candidates: dict[str, list[Path]] = {}
    skipped = []
    for f, name in files:
        parts = f.with_suffix("").parts
        key = name if transcripts is None else next(
            ("/".join(parts[-k:]) for k in range(min(3, len(parts)), 0, -1) if "/".join(parts[-k:]) in transcripts),
            None)
        if key is None:
            skipped.append({"source": str(f), "reason": "no transcript"})
        else:
            candidates.setdefault(key, []).append(f)
    recordings = []
    for key in sorted(candidates):
        best, best_rate = None, -1
        for f in candidates[key]:
            try:
                _, rate = decode_audio_file(f)
            except AudioError as e:
                skipped.append({"source": str(f), "reason": str(e)})
                continue
            if rate > best_rate:
                best, best_rate = f, rate
        if best is not None:
            recordings.append(Recording(key, best, "" if transcripts is None else transcripts[key]))
    return recordings, skipped


def align_recording(rec: Recording, language: str = ENGLISH) -> Alignment:
    """Load (16 kHz mono) and align one recording in ``language`` (an espeak-ng voice); raises
    AlignmentError or AudioError."""
    return _aligner(language).align(load_audio(rec.path), rec.text)


_ALIGNERS: dict[str, ForcedAligner] = {}


def _aligner(language: str) -> ForcedAligner:
    if language not in _ALIGNERS:
        _ALIGNERS[language] = ForcedAligner(language)
    return _ALIGNERS[language]
