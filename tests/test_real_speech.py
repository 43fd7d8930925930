"""Recorded speech: forced alignment, the augmentation chain, window-normalised features, and
``talker synth --speech`` end to end on a real recording (tests/data, CC-BY-SA-3.0)."""

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

DATA = Path(__file__).parent / "data"
REAL = DATA / "all-circuits-busy-now.flac"
REAL_FR = DATA / "conf-full-fr.flac"  # "Cette conférence est pleine." (June Wallack, CC-BY-SA-3.0)
TRANSCRIPTS = DATA / "transcripts.txt"
needs_espeak = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None, reason="needs espeak-ng")


# --- alignment ---------------------------------------------------------------------------------


def test_forced_alignment_of_a_real_recording_puts_words_and_phones_in_order():
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.data.align import ARPABET_IPA, ForcedAligner
    from talker.data.synthetic import viseme_of

    audio = sf.read(REAL, dtype="float32")[0]
    duration = len(audio) / 16000
    result = ForcedAligner().align(audio, "All circuits are busy now.")
    assert [w for w, _, _ in result.words] == ["all", "circuits", "are", "busy", "now"]
    bounds = [t for _, a, b in result.words for t in (a, b)]
    assert bounds == sorted(bounds) and 0 <= bounds[0] and bounds[-1] <= duration + 1e-6
    phones = result.speech.phonemes
    assert all(0 <= p.start < p.end <= duration + 1e-6 for p in phones)
    assert [p.start for p in phones] == sorted(p.start for p in phones)
    ipa = set(ARPABET_IPA.values())
    assert all(p.symbol in ipa for p in phones)
    # every word holds phones, and "busy" opens with a lip closure (B)
    for word, a, b in result.words:
        inside = [p for p in phones if a - 1e-6 <= p.start < b]
        assert inside, word
    busy = next((a, b) for w, a, b in result.words if w == "busy")
    first = next(p for p in phones if abs(p.start - busy[0]) < 1e-6)
    assert viseme_of(first.symbol) == "pbm"
    # the words are spoken where the recording is loud: the mean level inside words is far above
    # the level outside them
    t = np.arange(len(audio)) / 16000
    inside = np.zeros(len(audio), bool)
    for _, a, b in result.words:
        inside |= (t >= a) & (t < b)
    assert np.sqrt(np.mean(audio[inside] ** 2)) > 3 * np.sqrt(np.mean(audio[~inside] ** 2) + 1e-12)


def test_a_recording_that_does_not_fit_its_transcript_is_an_alignment_error():
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.data.align import AlignmentError, ForcedAligner

    aligner = ForcedAligner()
    with pytest.raises(AlignmentError, match="no words"):
        aligner.align(np.zeros(16000, np.float32), "... !")
    with pytest.raises(AlignmentError):
        aligner.align(np.zeros(4000, np.float32), "all circuits are busy now please try again later")
    # the aligner still works after a failure
    audio = sf.read(REAL, dtype="float32")[0]
    assert len(aligner.align(audio, "All circuits are busy now.").words) == 5


@needs_espeak
def test_words_missing_from_the_dictionary_get_espeak_phones():
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.data.align import ForcedAligner, ipa_to_arpabet

    aligner = ForcedAligner()
    assert aligner.decoder.lookup_word("blorptastic") is None
    phones = aligner.pronunciation("blorptastic").split()
    assert phones[:2] == ["B", "L"] and "P" in phones and "S" in phones
    assert ipa_to_arpabet(["tʃ", "ˈaɪ", "n", "ə"]) == ["CH", "AY", "N", "AH"]


@needs_espeak
def test_speech_that_reaches_the_edges_of_its_file_aligns():
    """Text-to-speech output and tightly trimmed recordings start and end within a few ms of the
    file's edges; pocketsphinx's phone pass fails on those unless the aligner pads them."""
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.data.align import ForcedAligner
    from talker.data.tts import synthesize

    text = "The pilot checked the broken clock after the meeting."
    audio = synthesize(text, voice="en-gb+f3").audio
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    trimmed = audio[loud[0] : loud[-1] + 1]
    result = ForcedAligner().align(trimmed, text)
    assert len(result.words) == 9
    duration = len(trimmed) / 16000
    bounds = [t for _, a, b in result.words for t in (a, b)]
    assert bounds == sorted(bounds) and 0 <= bounds[0] < 0.1 and duration - 0.15 < bounds[-1] <= duration
    assert all(0 <= p.start < p.end <= duration for p in result.speech.phonemes)


@needs_espeak
def test_a_real_recording_in_another_language_aligns_with_espeak_pronunciations():
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.data.align import ARPABET_IPA, ForcedAligner
    from talker.data.synthetic import viseme_of

    audio = sf.read(REAL_FR, dtype="float32")[0]
    duration = len(audio) / 16000
    aligner = ForcedAligner("fr")
    # French words are not looked up in the English dictionary ("est" is an English word too)
    assert aligner.decoder.lookup_word("est") and aligner.pronunciation("est") == "EH"
    assert aligner.key("est") != "est"
    result = aligner.align(audio, "Cette conférence est pleine.")
    assert [w for w, _, _ in result.words] == ["cette", "conférence", "est", "pleine"]
    bounds = [t for _, a, b in result.words for t in (a, b)]
    assert bounds == sorted(bounds) and 0 <= bounds[0] and bounds[-1] <= duration + 1e-6
    phones = result.speech.phonemes
    assert all(0 <= p.start < p.end <= duration + 1e-6 for p in phones) and all(p.symbol in ARPABET_IPA.values() for p in phones)
    # "pleine" opens with the lips shut (p), "conférence" holds an f (lip on teeth)
    pleine = next(a for w, a, _ in result.words if w == "pleine")
    assert viseme_of(next(p for p in phones if abs(p.start - pleine) < 1e-6).symbol) == "pbm"
    conf = next((a, b) for w, a, b in result.words if w == "conférence")
    assert any(viseme_of(p.symbol) == "fv" for p in phones if conf[0] <= p.start < conf[1])
    # the words are where the recording is loud
    t = np.arange(len(audio)) / 16000
    inside = np.zeros(len(audio), bool)
    for _, a, b in result.words:
        inside |= (t >= a) & (t < b)
    assert np.sqrt(np.mean(audio[inside] ** 2)) > 3 * np.sqrt(np.mean(audio[~inside] ** 2) + 1e-12)


@needs_espeak
def test_synth_names_an_unknown_language(tmp_path):
    from talker.data.synthetic import synth_dataset
    from talker.errors import InputError

    with pytest.raises(InputError, match="--language 'xx-nowhere'.*espeak-ng has no such voice"):
        synth_dataset(tmp_path / "out", speech=[REAL_FR], transcripts=TRANSCRIPTS, language="xx-nowhere")
    assert not (tmp_path / "out").exists()


def test_transcript_text_and_files():
    from talker.data.align import number_words, read_transcripts, transcript_words

    assert transcript_words("Press 1, then #. It's 25!") == ["press", "one", "then", "pound", "it's", "twenty", "five"]
    # other languages: words of any script, apostrophes kept inside words, digits left to espeak-ng
    assert transcript_words("Вы ввели ПИН-код, затем 5.", "ru") == ["вы", "ввели", "пин", "код", "затем", "5"]
    assert transcript_words("Ce choix n'est pas valide à 100%", "fr") == ["ce", "choix", "n'est", "pas", "valide", "à", "100"]
    assert number_words(1903) == ["one", "thousand", "nine", "hundred", "three"]
    assert read_transcripts(TRANSCRIPTS) == {"all-circuits-busy-now": "All circuits are busy now."}


def test_recordings_match_transcripts_by_path_tail_and_prefer_the_wider_band(tmp_path):
    from talker.data.align import find_recordings, read_transcripts

    (tmp_path / "t.txt").write_text("; comment\nbeep: [a beep tone]\ndigits/7: seven\nhello: Hello there.\n")
    tr = read_transcripts(tmp_path / "t.txt")
    assert tr == {"digits/7": "seven", "hello": "Hello there."}
    (tmp_path / "s" / "digits").mkdir(parents=True)
    tone = np.sin(np.arange(8000) / 5).astype(np.float32) * 0.1
    sf.write(tmp_path / "s" / "digits" / "7.wav", tone, 8000)
    sf.write(tmp_path / "s" / "hello.wav", tone, 8000)
    sf.write(tmp_path / "s" / "hello.flac", tone, 16000)
    sf.write(tmp_path / "s" / "beep.wav", tone, 8000)
    recs, skipped = find_recordings([tmp_path / "s"], tr)
    assert [(r.name, r.path.name) for r in recs] == [("digits/7", "7.wav"), ("hello", "hello.flac")]
    assert [Path(s["source"]).name for s in skipped] == ["beep.wav"]


def test_held_out_split_is_stable_and_disjoint():
    from talker.data.synthetic import in_held_out

    names = [f"prompt-{i}" for i in range(400)]
    held = [n for n in names if in_held_out(n, 0.12)]
    assert 25 < len(held) < 75
    assert held == [n for n in reversed(names) if in_held_out(n, 0.12)][::-1]
    assert not any(in_held_out(n, 0.0) for n in names)


# --- augmentation ------------------------------------------------------------------------------


def _speech():
    return sf.read(REAL, dtype="float32")[0]


def test_noise_is_added_at_the_asked_snr_and_fills_the_pauses():
    from talker.training.augment import NOISE_KINDS, add_noise, make_noise, speech_power

    x = np.concatenate([np.zeros(8000, np.float32), _speech(), np.zeros(8000, np.float32)])
    for kind in NOISE_KINDS:
        noise = make_noise(kind, len(x), np.random.default_rng(0), [_speech()])
        assert noise.shape == x.shape and abs(np.sqrt(np.mean(noise**2)) - 1) < 1e-3
        for snr in (5.0, 20.0):
            y = add_noise(x, noise, snr)
            measured = 10 * np.log10(speech_power(x) / np.mean((y - x) ** 2))
            assert abs(measured - snr) < 0.01, (kind, snr, measured)
            assert np.sqrt(np.mean(y[:8000] ** 2)) > 0  # the leading pause is no longer silent


def test_augmentation_is_seeded_and_keeps_length_and_sync():
    from talker.training.augment import Augmenter, codec_round_trip, pitch_shift, speed_perturb, telephone

    x = _speech()
    aug = Augmenter(babble_sources=[x])
    outs = [aug(x, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert all(o.shape == x.shape and o.dtype == np.float32 and np.abs(o).max() <= 1 for o in outs)
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    for codec in ("mp3", "aac", "opus"):  # the codec's delay is removed: the audio stays on its frames
        y = codec_round_trip(x, codec, 64000)
        assert y.shape == x.shape and np.corrcoef(x, y)[0, 1] > 0.95, codec
    assert pitch_shift(x, 3.0).shape == x.shape
    assert abs(len(speed_perturb(x, 1.1)) - len(x) / 1.1) < 2
    spec = lambda a: np.abs(np.fft.rfft(a)) ** 2  # noqa: E731
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    y = telephone(x, np.random.default_rng(0))
    assert spec(y)[f > 4200].sum() < 1e-3 * spec(x)[f > 4200].sum()


def test_a_pause_can_be_filled_with_babble_whatever_the_chain_draws():
    from talker.training.augment import AugmentConfig, Augmenter

    speech = _speech()
    pause = np.zeros(16000, np.float32)
    quiet = AugmentConfig(p_speed=0, p_pitch=0, p_reverb=0, p_noise=0, p_telephone=0, p_codec=0, gain_db=(0.0, 0.0))
    aug = Augmenter(quiet, babble_sources=[speech])
    power = float(np.mean(speech**2))
    assert not aug(pause, np.random.default_rng(0), reference_power=power).any()  # no noise drawn: silence stays
    filled = aug(pause, np.random.default_rng(0), reference_power=power, noise_kind="babble")
    assert np.sqrt(np.mean(filled**2)) > 1e-4  # voices fill it (40 dB under the speech at the quietest)
    with pytest.raises(ValueError, match="babble"):
        aug(pause, np.random.default_rng(0), noise_kind="crowd")


def test_pause_windows_come_from_the_quiet_frames():
    from talker.training.augment import pause_runs, ping_pong

    spf = 640
    speech = np.random.default_rng(0).standard_normal(40 * spf).astype(np.float32) * 0.3
    speech[10 * spf : 25 * spf] *= 1e-3  # a 15-frame pause
    assert pause_runs(speech, spf) == [(12, 23)]  # trimmed 2 frames away from the speech on each side
    assert pause_runs(speech, spf, min_frames=12) == []
    idx = ping_pong(12, 23, 30)
    assert idx.min() == 12 and idx.max() == 22 and np.all(np.abs(np.diff(idx)) == 1)


def test_window_normalised_features_ignore_loudness():
    from talker.frontends import log_mel
    from talker.models import Speech2Latent

    x = _speech()[:32000]
    feats = torch.stack([log_mel(x, 50, floor=1e-10), log_mel(x * 0.05, 50, floor=1e-10)])
    window = Speech2Latent(feature_normalization="window", hidden_size=32, num_heads=2, ffn_size=64,
                           num_encoder_layers=1, num_decoder_layers=1, latent_dim=8,
                           pose_predictor_channels=16).eval()
    dataset = Speech2Latent(feature_normalization="dataset", hidden_size=32, num_heads=2, ffn_size=64,
                            num_encoder_layers=1, num_decoder_layers=1, latent_dim=8,
                            pose_predictor_channels=16).eval()
    dataset.load_state_dict(window.state_dict())
    with torch.no_grad():
        a, b = window(feats).latents
        c, d = dataset(feats).latents
    assert torch.allclose(a, b, atol=1e-4)
    assert (c - d).abs().max() > 1e-2


# --- talker synth --speech ----------------------------------------------------------------------


@needs_espeak
def test_synth_from_recorded_speech_end_to_end(tmp_path):
    pytest.importorskip("pocketsphinx", reason="needs requirements-prepare.txt")
    from talker.audio import load_audio
    from talker.data.synthetic import VISEMES
    from talker.video import read_video

    # one aligned recording, one without a transcript (reported), one that cannot be aligned
    speech = tmp_path / "speech"
    speech.mkdir()
    (speech / "all-circuits-busy-now.flac").write_bytes(REAL.read_bytes())
    sf.write(speech / "unknown.wav", np.zeros(8000, np.float32), 16000)
    sf.write(speech / "tone.wav", np.zeros(1600, np.float32), 16000)
    transcripts = tmp_path / "t.txt"
    transcripts.write_text(TRANSCRIPTS.read_text() + "tone: this recording is far too short for all of these words\n")
    out = tmp_path / "out"
    talker = str(Path(sys.executable).parent / "talker")
    r = subprocess.run([talker, "synth", "--out", str(out), "--speech", str(speech), "--transcripts", str(transcripts),
                        "--seconds", "4", "--resolution", "64", "--emotion", "none", "--workers", "1", "-q"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    [clip] = meta["clips"]
    assert clip["sources"] == ["all-circuits-busy-now"] and clip["voice"].startswith("recorded")
    assert clip["text"] == "All circuits are busy now."
    reasons = {Path(s["source"]).name: s["reason"] for s in meta["skipped"]}
    assert reasons["unknown.wav"] == "no transcript" and "tone.wav" in reasons
    truth = dict(np.load(out / "truth" / f"{clip['id']}.npz"))
    frames, sound, _ = read_video(out / "videos" / f"{clip['id']}.mp4")
    n = clip["frames"]
    assert len(frames) == n and frames.shape[1:] == (64, 64, 3) and truth["mouth_open"].shape == (n,)
    # the clip's sound is the recording (after a lead-in of silence)
    rec = load_audio(REAL)
    lag = int(np.argmax(np.correlate(sound[: len(rec) + 16000], rec, "valid")))
    assert np.corrcoef(sound[lag : lag + len(rec)], rec)[0, 1] > 0.9
    # the mouth moves while the recording speaks and is shut before and after
    speaking = truth["speaking"].astype(bool)
    t = (np.arange(n) + 0.5) / 25
    assert speaking.any() and not speaking[t < lag / 16000].any() and not speaking[t > (lag + len(rec)) / 16000].any()
    assert truth["mouth_open"][speaking].max() > 0.3 and np.all(truth["mouth_open"][t < lag / 16000 - 0.1] == 0)
    assert len({VISEMES[v] for v in truth["viseme"][speaking]}) >= 3


def test_mouth_readout_recovers_a_linear_mouth_code():
    from talker.training.s2l import MouthReadout

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 32))
    mouth = np.clip(z[:, 3] * 0.3 + 0.3, 0, 1)
    readout = MouthReadout(z, mouth)
    assert np.corrcoef(readout(z), mouth)[0, 1] > 0.95
    # the latents move along dimension 3 as the mouth opens
    assert np.argmax(np.abs(readout.direction)) == 3 and readout.direction[3] > 0


# --- voice activity -----------------------------------------------------------------------------


def test_voice_activity_hears_the_recording_and_not_silence_or_noise():
    from talker.training.augment import make_noise
    from talker.vad import speech_probability

    x = _speech()
    quiet = np.zeros(16000, np.float32)
    clip = np.concatenate([quiet, x, quiet])
    n = len(clip) // 640
    p = speech_probability(clip, n, 4 * n).numpy()
    assert p.shape == (4 * n,) and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
    words = slice(4 * 25 + 20, 4 * (25 + len(x) // 640) - 20)  # the recording without its edges
    assert np.mean(p[words] > 0.5) > 0.9
    assert np.mean(p[: 4 * 20] < 0.1) > 0.9  # the second of silence before it
    for k, kind in enumerate(("pink", "brown", "hum")):
        noise = make_noise(kind, 48000, np.random.default_rng(k)) * 0.05
        assert speech_probability(noise, 75, 75).numpy().mean() < 0.2, kind


def test_voice_activity_streams_as_the_samples_come():
    """Fed a frame's samples at a time, the stream's P(speech) for the frames so far is what
    speech_probability gives on the whole audio so far (complete 32-ms chunks carried on, the
    one being filled read zero-padded)."""
    from talker.vad import VoiceActivityStream, speech_probability

    clip = np.concatenate([np.zeros(8000, np.float32), _speech()[:16000]])
    stream, done = VoiceActivityStream(), 0
    for end in (1, 2, 5, 6, 9, 20, 31, len(clip) // 640):  # frames heard so far
        stream.extend(clip[done * 640 : end * 640])
        got = stream.probability(4 * done, 4 * end, 4)
        want = speech_probability(clip[: end * 640], end, 4 * end)[4 * done :]
        assert torch.allclose(got, want, atol=1e-6), end
        done = end
    assert got.max() > 0.5  # the speech is heard
    assert stream.first_prob > 0 and len(stream.probs) < 12  # the chunks no later row reads are forgotten


def test_voice_activity_is_an_input_of_speech2latent():
    from talker.frontends import log_mel
    from talker.models import Speech2Latent
    from talker.vad import append_voice_activity

    x = _speech()[:32000]
    feats = append_voice_activity(log_mel(x, 50, floor=1e-10), x, 50)
    assert feats.shape == (200, 81)
    kw = dict(feature_normalization="window", hidden_size=32, num_heads=2, ffn_size=64, num_encoder_layers=1,
              num_decoder_layers=1, latent_dim=8, pose_predictor_channels=16)
    torch.manual_seed(0)
    plain = Speech2Latent(**kw).eval()
    voiced = Speech2Latent(voice_activity=True, **kw).eval()
    missing, unexpected = voiced.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {k for k in voiced.state_dict() if k.startswith("voice_proj.")} and not unexpected
    with torch.no_grad():
        # a network without the input, extended by it, starts where it was
        assert torch.allclose(voiced(feats[None]).latents, plain(feats[None, :, :80]).latents, atol=1e-5)
        torch.nn.init.normal_(voiced.voice_proj[2].weight)
        silenced = feats.clone()
        silenced[:, -1] = 0
        assert (voiced(feats[None]).latents - voiced(silenced[None]).latents).abs().max() > 1e-2
    with pytest.raises(ValueError, match="voice activity"):
        voiced(feats[None, :, :80])


def test_mouths_shut_where_nobody_speaks_and_nothing_else_moves():
    from talker.models import Speech2Latent

    torch.manual_seed(0)
    weight = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0, 0])
    for gain in (1.0, 1.5):
        torch.manual_seed(0)
        model = Speech2Latent(voice_activity=True, mouth_readout=True, mouth_gain=gain, feature_normalization="window",
                              hidden_size=32, num_heads=2, ffn_size=64, num_encoder_layers=1, num_decoder_layers=1,
                              latent_dim=8, pose_predictor_channels=16).eval()
        model.set_mouth_readout(torch.zeros(8), weight, 0.2, torch.tensor([1.0, 0.5, 0, 0, 0, 0, 0, 0]))
        torch.nn.init.normal_(model.out.weight)
        feats = torch.randn(1, 80, 81)  # 20 video frames of 4 feature rows
        with torch.no_grad():
            feats[0, :40, -1], feats[0, 40:, -1] = 1.0, 0.0  # 10 frames of speech, then nobody
            free = model(feats).z_sem[0]
            shaped = model(feats, shape_mouth=True).z_sem[0]
        opening = model.mouth_open(free)
        assert (opening[:10] > 0).any() and (opening[10:] > 0).any()
        # while someone speaks the opening is scaled by the gain (closed mouths stay as they are) ...
        expected = torch.where(opening[:10] > 0, gain * opening[:10], opening[:10])
        assert torch.allclose(model.mouth_open(shaped[:10]), expected, atol=1e-5)
        # ... and where nobody speaks it is shut
        opened = opening[10:] > 0
        assert torch.allclose(model.mouth_open(shaped[10:])[opened], torch.zeros(int(opened.sum())), atol=1e-5)
        moved = shaped - free
        assert torch.allclose(moved[:, 1], moved[:, 0] * 0.5, atol=1e-5) and (moved[:, 2:] == 0).all()  # along the direction
        if gain == 1.0:
            assert torch.equal(free[:10], shaped[:10])
    with pytest.raises(ValueError, match="mouth_readout"):
        Speech2Latent(hidden_size=32, num_heads=2, ffn_size=64, num_encoder_layers=1, num_decoder_layers=1,
                      latent_dim=8, pose_predictor_channels=16).set_mouth_readout(torch.zeros(8), weight, 0.0, weight)
