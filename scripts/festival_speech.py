"""Speech from festival's voices, with transcripts, for ``talker synth --speech``.

    python scripts/festival_speech.py --out runs/bundled/festival --sentences 40 --seed 800 \
        [--voices kal_diphone,ked_diphone,cmu_us_slt_arctic_hts] [--stretch 0.9,1.0,1.15]

festival is another text-to-speech engine than espeak-ng (diphone concatenation and HTS
statistical synthesis), so speech2latent hears other voices and other prosody. The sentences are
``talker synth``'s own generator under another seed; each is spoken by one voice (in turn) at one
duration stretch (in turn, so that every voice speaks at every stretch), written as 16 kHz wav under OUT/VOICE/, and listed in
OUT/transcripts.txt as ``VOICE/NAME: text`` lines. ``talker synth --speech OUT --transcripts
OUT/transcripts.txt`` then force-aligns them like recorded speech: the lips follow the alignment.
Needs festival and its voices (Debian: ``apt-get install festival festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts``); run at data-preparation time, never by the package.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from talker.audio import SAMPLE_RATE, resample
from talker.data.synthetic import sentences

VOICES = "kal_diphone,ked_diphone,cmu_us_slt_arctic_hts"


def speak(text: str, voice: str, stretch: float, out: Path) -> float:
    """``text`` in festival's ``voice`` at ``stretch`` × its durations → 16 kHz wav ``out``; seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        scheme = f"(begin (voice_{voice}) (Parameter.set 'Duration_Stretch {stretch}))"
        subprocess.run(["text2wave", "-eval", scheme, "-o", tmp.name], input=text.encode(), check=True,
                       capture_output=True)
        audio, rate = sf.read(tmp.name, dtype="float32")
    if not np.isfinite(audio).all() or np.abs(audio).max() < 1e-3:
        raise RuntimeError(f"festival's {voice} gave no sound for {text!r}")
    audio = resample(audio, rate, SAMPLE_RATE)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    return len(audio) / SAMPLE_RATE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for VOICE/*.wav and transcripts.txt")
    parser.add_argument("--sentences", type=int, default=40, help="sentences per voice")
    parser.add_argument("--seed", type=int, default=800)
    parser.add_argument("--voices", default=VOICES, help="festival voice names (voice_NAME), comma-separated")
    parser.add_argument("--stretch", default="0.9,1.0,1.15", help="duration stretches, used in turn")
    args = parser.parse_args(argv)

    if shutil.which("text2wave") is None:
        sys.exit("festival's text2wave was not found: apt-get install festival festvox-kallpc16k "
                 "festvox-kdlpc16k festvox-us-slt-hts")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    stretches = [float(s) for s in args.stretch.split(",")]
    out = Path(args.out)
    text = sentences(np.random.default_rng(args.seed))
    lines, seconds = [], 0.0
    jobs = [(voice, k) for k in range(args.sentences) for voice in voices]
    for voice, k in tqdm(jobs, desc="festival", unit="sentence"):
        (out / voice).mkdir(parents=True, exist_ok=True)
        sentence = next(text)
        name = f"{voice}/{args.seed:04d}-{k:04d}"
        seconds += speak(sentence, voice, stretches[k % len(stretches)], out / f"{name}.wav")
        lines.append(f"{name}: {sentence}")
    (out / "transcripts.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} sentences, {seconds / 60:.1f} min, in {len(voices)} voices to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
