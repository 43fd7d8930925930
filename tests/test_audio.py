"""Audio loading: formats, rates, channels, frame alignment, bad input, front ends."""

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import speech_like, write_audio

from talker.audio import SAMPLES_PER_FRAME, load_audio, num_frames
from talker.frontends import log_mel, wav2vec2_features
from talker.errors import AudioError, TalkerError

RATES = [8000, 16000, 22050, 44100, 48000]
FORMATS = [".wav", ".flac", ".ogg", ".mp3"]


def expected_frames(seconds: float) -> int:
    return int(math.floor(seconds * 25 + 0.5))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_frame_count_every_format_rate_and_layout(tmp_path, fmt, rate, channels):
    path = write_audio(tmp_path / f"a{fmt}", 1.37, rate, channels)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == expected_frames(1.37) * SAMPLES_PER_FRAME
    assert np.abs(wave).max() > 0.05  # the speech is there, not silence


@pytest.mark.parametrize("seconds", [0.5, 2.23, 11.9, 30.0])
@pytest.mark.parametrize("fmt", FORMATS)
def test_frame_count_over_durations(tmp_path, seconds, fmt):
    rate = 22050 if fmt == ".mp3" else 44100
    wave = load_audio(write_audio(tmp_path / f"a{fmt}", seconds, rate, 2))
    assert wave.shape[0] // SAMPLES_PER_FRAME == expected_frames(seconds)


def _encode_with_pyav(path, codec, rate, seconds):
    x = speech_like(seconds, rate)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        frame_size = s.codec_context.frame_size or 1024
        for i in range(0, len(x), frame_size):
            f = av.AudioFrame.from_ndarray(x[None, i : i + frame_size], format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = rate, i, Fraction(1, rate)
            c.mux(s.encode(f))
        c.mux(s.encode(None))


@pytest.mark.parametrize("ext,codec,rate", [(".m4a", "aac", 44100), (".webm", "libopus", 48000)])
def test_m4a_and_webm_through_ffmpeg(tmp_path, ext, codec, rate):
    path = tmp_path / f"speech{ext}"
    _encode_with_pyav(path, codec, rate, 2.0)
    wave = load_audio(path)
    assert wave.shape[0] // SAMPLES_PER_FRAME == 50
    assert np.abs(wave).max() > 0.05


def test_arrays_and_tensors():
    x = speech_like(1.0, 48000, channels=2)
    a = load_audio(x, sampling_rate=48000)
    b = load_audio(x.T.copy(), sampling_rate=48000)  # channels first
    c = load_audio(torch.from_numpy(x), sampling_rate=48000)
    d = load_audio((x * 32767).astype(np.int16), sampling_rate=48000)
    assert a.shape == b.shape == c.shape == d.shape == (25 * SAMPLES_PER_FRAME,)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    np.testing.assert_allclose(a, d, atol=1e-3)


def test_silence_is_accepted():
    wave = load_audio(np.zeros(16000 * 2, np.float32), sampling_rate=16000)
    assert wave.shape[0] == 50 * SAMPLES_PER_FRAME and not wave.any()


def test_num_frames_rounds_half_up():
    assert num_frames(8000, 16000) == 13  # 0.5 s = 12.5 frames
    assert num_frames(7999, 16000) == 12
    assert num_frames(100, 16000) == 1


BAD_ARRAYS = [
    (np.zeros(0, np.float32), 16000, "no samples"),
    (np.array([0.0, np.nan] * 1000, np.float32), 16000, "NaN or infinite"),
    (np.array([0.0, np.inf] * 1000, np.float32), 16000, "NaN or infinite"),
    (np.zeros(100, np.float32), 16000, "too short"),
    (np.zeros(16000 * 11, np.float32), 16000, "too long"),
    (np.zeros(16000, np.float32), None, "sampling_rate is required"),
    (np.zeros(16000, np.float32), 0, "outside the accepted range"),
    (np.zeros(16000, np.float32), 16000.5, "integer number of Hz"),
    (np.zeros(16000, np.float32), "16k", "integer number of Hz"),
    (np.zeros((2, 2, 16000), np.float32), 16000, "1-D"),
    (np.array(["a"] * 16000), 16000, "dtype"),
]


@pytest.mark.parametrize("array,rate,message", BAD_ARRAYS)
def test_bad_arrays_raise_audio_error(array, rate, message):
    with pytest.raises(AudioError, match=message):
        load_audio(array, sampling_rate=rate, max_duration=10.0)


def test_bad_files_raise_audio_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 100)
    noise = tmp_path / "noise.flac"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    good = write_audio(tmp_path / "good.wav", 2.0)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good_mp3 = write_audio(tmp_path / "good.mp3", 2.0)
    cut_header = tmp_path / "cut.ogg"
    cut_header.write_bytes(write_audio(tmp_path / "g.ogg", 2.0).read_bytes()[:40])
    cases = {
        empty: "empty",
        text: "not a readable audio file",
        noise: "not a readable audio file",
        truncated: "truncated",
        cut_header: "not a readable audio file|no samples|too short",
        tmp_path / "missing.wav": "not found",
        tmp_path: "folder",
    }
    for path, message in cases.items():
        with pytest.raises(AudioError, match=message):
            load_audio(path)
    assert load_audio(good_mp3).shape[0] == 50 * SAMPLES_PER_FRAME


def test_audio_error_is_a_talker_error():
    with pytest.raises(TalkerError):
        load_audio(12345)


def test_log_mel_is_four_rows_per_frame():
    wave = load_audio(speech_like(1.5), sampling_rate=16000)
    n = wave.shape[0] // SAMPLES_PER_FRAME
    mel = log_mel(wave, n)
    assert mel.shape == (4 * n, 80) and torch.isfinite(mel).all()
    silent = log_mel(np.zeros_like(wave), n)
    assert torch.allclose(silent, torch.full_like(silent, math.log(1e-5)))
    assert mel.mean() > silent.mean() + 1.0


def test_wav2vec2_features_are_two_rows_per_frame():
    from conftest import tiny_components

    comps = tiny_components("wav2vec2")
    wave = load_audio(speech_like(1.24), sampling_rate=16000)
    n = wave.shape[0] // SAMPLES_PER_FRAME
    feats = wav2vec2_features(wave, n, comps["audio_encoder"], comps["feature_extractor"], feature_rate=50)
    assert feats.shape == (2 * n, 32) and torch.isfinite(feats).all()


def test_speech_features_follow_the_speech2latents_config():
    """One call for the pipeline and training: the front end, its settings and voice activity are
    read from the config (a speech2latent's, or a training run's)."""
    from talker.errors import CheckpointError, InputError
    from talker.frontends import speech_features
    from talker.training.configs import S2LConfig

    wave = load_audio(speech_like(1.5), sampling_rate=16000)
    n = wave.shape[0] // SAMPLES_PER_FRAME
    plain = speech_features(wave, n, {"audio_frontend": "mel", "mel_floor": 1e-10, "n_mels": 40})
    assert torch.equal(plain, log_mel(wave, n, n_mels=40, floor=1e-10))
    with_vad = speech_features(wave, n, S2LConfig())  # voice activity by default: P(speech) last
    assert with_vad.shape == (4 * n, 81) and torch.equal(with_vad[:, :80], log_mel(wave, n, floor=1e-10))
    assert 0 <= with_vad[:, 80].min() and with_vad[:, 80].max() <= 1 and with_vad[:, 80].max() > 0.5
    with pytest.raises(InputError, match="one of mel, wav2vec2; got 'fbank'"):
        speech_features(wave, n, {"audio_frontend": "fbank"})
    with pytest.raises(CheckpointError, match="wav2vec2 front end needs its audio encoder"):
        speech_features(wave, n, {"audio_frontend": "wav2vec2"})
