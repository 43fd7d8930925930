"""The synthetic speaker: TTS timings, truth tracks, rendering, the `talker synth` command."""

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    ctypes.util.find_library("espeak-ng") is None, reason="libespeak-ng is not installed (apt-get install espeak-ng)"
)

TALKER = str(Path(sys.executable).parent / "talker")


@pytest.fixture(scope="module")
def minute_of_truth():
    """About a minute of clips' truth (no rendering), several voices and rates."""
    from talker.data.synthetic import make_clip, plan_clips

    class NoFace:
        def render(self, state):
            raise AssertionError("not rendered")

    specs = plan_clips(clips=6, seconds=10, text_file=None, seed=3, voices=["en-us", "en-gb+f3", "en-us+m3"], emotion="random")
    return [make_clip(spec, NoFace())[1:] for spec in specs]


def test_phoneme_timings_follow_the_audio():
    from talker.data.tts import synthesize

    speech = synthesize("Hello world, this is a test.", "en-us", 160, 50)
    assert speech.duration > 1.0 and len(speech.phonemes) > 10
    starts = [p.start for p in speech.phonemes]
    assert starts == sorted(starts) and all(p.end > p.start for p in speech.phonemes)
    # sound where phonemes are, near silence before the first
    rms = lambda a, b: np.sqrt(np.mean(speech.audio[int(a * 16000) : int(b * 16000)] ** 2))  # noqa: E731
    voiced = [p for p in speech.phonemes if p.symbol and p.end - p.start > 0.05]
    assert np.mean([rms(p.start, p.end) for p in voiced]) > 10 * (rms(0, speech.phonemes[0].start) + 1e-4)


def test_unknown_voice_is_a_clear_error():
    from talker.data.tts import synthesize
    from talker.errors import TalkerError

    with pytest.raises(TalkerError, match="no voice 'xx-nowhere'"):
        synthesize("hi", "xx-nowhere")
    # espeak-ng itself speaks the plain language when a variant is missing (names are case-sensitive)
    with pytest.raises(TalkerError, match="no voice variant 'Adam' in 'en-us\\+Adam'.*adam"):
        synthesize("hi", "en-us+Adam")
    assert len(synthesize("hi", "en-us+adam").audio) > 0


def test_viseme_classes():
    from talker.data.synthetic import viseme_of

    cases = {"p": "pbm", "b": "pbm", "m": "pbm", "f": "fv", "v": "fv", "θ": "th", "ð": "th", "ɑː": "aa",
             "aɪ": "aa", "ɛ": "e", "eɪ": "e", "iː": "i", "ɪ": "i", "oʊ": "o", "ɔː": "o", "uː": "u", "w": "u",
             "ʃ": "sh", "tʃ": "sh", "ɹ": "r", "t": "cons", "": "rest", "_:": "rest"}
    assert {k: viseme_of(k) for k in cases} == cases


def test_truth_tracks(minute_of_truth):
    total_s, blinks = 0.0, 0
    for audio, truth in minute_of_truth:
        n = len(truth["pose"])
        assert abs(len(audio) / 16000 - n / 25) <= 0.04
        silent, speaking = ~truth["speaking"], truth["speaking"]
        assert (truth["mouth_open"][silent] < 0.02).mean() >= 0.95
        pbm = truth["viseme"] == 1
        assert pbm.any() and (truth["mouth_open"][pbm] < 0.02).all()  # lips closed on p/b/m
        assert truth["mouth_open"][speaking].std() > 0.1 and truth["mouth_open"][speaking].max() > 0.5
        assert np.abs(truth["pose"]).max() <= 10.0
        assert np.abs(np.diff(truth["pose"], axis=0)).max() <= 2.0
        assert truth["pose"][:, 0].std() > 0.5  # the head does move
        assert truth["emotion"].shape == (n, 4) and 0 <= truth["emotion"].min() and truth["emotion"].max() <= 1
        blinks += int((np.diff((truth["blink"] > 0.5).astype(int)) == 1).sum())
        total_s += n / 25
    assert total_s > 50
    assert 10 <= blinks / (total_s / 60) <= 30


def test_a_p_b_m_in_the_phoneme_timeline_shuts_the_lips_in_the_truth_and_the_rendered_frame(minute_of_truth):
    """Every /p/, /b/, /m/ of the phoneme timeline that spans a frame centre: that frame's truth is
    the p/b/m viseme with the lips shut, and the face rendered with its mouth shows no dark of an
    open mouth, which the clip's widest-open frame shows."""
    from talker.data.face import FaceState, SyntheticFace
    from talker.data.synthetic import VISEMES

    checked, face = 0, SyntheticFace(128)
    pts = (face.mesh[[61, 291, 0, 17], :2] - face.offset) * face.scale
    (x0, y0), (x1, y1) = np.floor(pts.min(0) - 2).astype(int), np.ceil(pts.max(0) + 2).astype(int)

    def mouth_brightness(truth, k):  # the frame's mouth and emotion, the head still so the box holds the mouth
        state = FaceState(mouth_open=float(truth["mouth_open"][k]), mouth_width=float(truth["mouth_width"][k]),
                          emotion=truth["emotion"][k])
        return face.render(state)[y0:y1, x0:x1].astype(float).mean()

    for _, truth in minute_of_truth:
        centres = (np.arange(len(truth["pose"])) + 0.5) / 25
        for start, end, viseme in zip(truth["phoneme_start"], truth["phoneme_end"], truth["phoneme_viseme"], strict=True):
            frames = np.flatnonzero((centres >= start) & (centres < end))
            if VISEMES[viseme] == "pbm" and frames.size:
                assert (truth["viseme"][frames] == viseme).all() and (truth["mouth_open"][frames] < 0.02).all()
                checked += frames.size
        closed = np.flatnonzero(truth["viseme"] == VISEMES.index("pbm"))[0]
        opened = int(np.argmax(truth["mouth_open"]))
        assert truth["mouth_open"][opened] > 0.5
        assert mouth_brightness(truth, closed) > mouth_brightness(truth, opened) + 10
    assert checked >= 50


def test_rendering_shows_the_state():
    from talker.data.face import FaceState, SyntheticFace

    face = SyntheticFace(128)
    closed = face.render(FaceState()).astype(float)
    assert closed.shape == (128, 128, 3)
    def box(indices, pad):
        pts = (face.mesh[indices, :2] - face.offset) * face.scale
        (x0, y0), (x1, y1) = np.floor(pts.min(0) - pad).astype(int), np.ceil(pts.max(0) + pad).astype(int)
        return slice(y0, y1), slice(x0, x1)

    mouth = box([61, 291, 0, 17], 2)
    eyes = box([33, 133, 263, 362, 159, 145], 2)
    opened = face.render(FaceState(mouth_open=1.0)).astype(float)
    assert opened[mouth].mean() < closed[mouth].mean() - 10  # a dark, open mouth
    blink = face.render(FaceState(blink=1.0)).astype(float)
    assert np.abs(blink[eyes] - closed[eyes]).mean() > 3 and np.abs(blink[mouth] - closed[mouth]).mean() < 1
    turned = face.render(FaceState(pose=np.array([8.0, 0, 0]))).astype(float)
    assert np.abs(turned - closed).mean() > 2
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1.0
        whole_face = box(list(range(468)), 0)
        assert np.abs(face.render(FaceState(emotion=e)).astype(float)[whole_face] - closed[whole_face]).mean() > 2
    # the background far from the head does not move
    assert np.abs(turned[:, :8] - closed[:, :8]).max() < 3


def test_the_renderers_landmarks_are_where_the_face_mesh_finds_them():
    """bench/emotion.py reads what the face itself did off the renderer's landmarks, with the
    probe's own feature definitions: that needs the renderer's points numbered as the face mesh
    numbers them, and drawn where it finds them."""
    pytest.importorskip("mediapipe", reason="needs requirements-prepare.txt")
    from talker.data.face import FaceState, SyntheticFace
    from talker.evaluation.metrics import FaceProbe, landmark_features

    face, probe = SyntheticFace(256), FaceProbe()
    states = [FaceState(), FaceState(mouth_open=0.7, pose=np.array([6.0, -3.0, 2.0]))]
    drawn = np.stack([(face.landmarks(s)[0][:468, :2] - face.offset) * face.scale / 256 for s in states])
    found = probe.landmarks(np.stack([face.render(s) for s in states]))
    assert np.median(np.linalg.norm(found - drawn, axis=-1) * 256, axis=1).max() < 2.0  # pixels of 256²
    by_renderer, by_probe = landmark_features(drawn), landmark_features(found)
    assert np.abs(by_renderer[:, 1:] - by_probe[:, 1:]).max() < 0.03  # corners, width, brows, eyes
    assert by_renderer[1, 0] > by_renderer[0, 0] + 0.1 and by_probe[1, 0] > by_probe[0, 0] + 0.1  # the opened lips


def run_synth(out, *args):
    return subprocess.run([TALKER, "synth", "--out", str(out), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_synth_cli_is_deterministic_and_writes_the_layout(tmp_path):
    args = ("--clips", 2, "--seconds", 3, "--seed", 5, "--resolution", 64, "-q")
    a, b = run_synth(tmp_path / "a", *args), run_synth(tmp_path / "b", *args, "--workers", 1)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert len(meta["clips"]) == 2 and meta["fps"] == 25
    for clip in meta["clips"]:
        for key in ("text", "voice", "rate", "pitch", "seed"):
            assert key in clip
        name = clip["id"]
        truth_a = (tmp_path / "a" / "truth" / f"{name}.npz").read_bytes()
        assert truth_a == (tmp_path / "b" / "truth" / f"{name}.npz").read_bytes()
        frames = []
        for d in ("a", "b"):
            with av.open(str(tmp_path / d / "videos" / f"{name}.mp4")) as c:
                v, au = c.streams.video[0], c.streams.audio[0]
                assert v.codec_context.name == "h264" and au.codec_context.name == "aac" and v.average_rate == 25
                frames.append(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(v)]))
                adur = float(au.duration * au.time_base)
        assert np.array_equal(frames[0], frames[1])
        assert frames[0].shape[1:] == (64, 64, 3) and len(frames[0]) == clip["frames"]
        assert abs(adur - clip["frames"] / 25) <= 0.04


def test_synth_from_a_text_file_with_fixed_emotion(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("Peter picked a pepper. Then he went home.\nWhere is my bag?\n")
    r = run_synth(tmp_path / "out", "--text-file", text, "--resolution", 64, "--emotion", "sad=0.5", "angry=0.25",
                  "--voices", "en-gb+f3", "-q")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert [c["text"] for c in meta["clips"]] == ["Peter picked a pepper. Then he went home.", "Where is my bag?"]
    assert all(c["voice"] == "en-gb+f3" for c in meta["clips"])
    truth = np.load(tmp_path / "out" / "truth" / f"{meta['clips'][0]['id']}.npz")
    assert np.allclose(truth["emotion"], [0.0, 0.5, 0.25, 0.0])


@pytest.mark.parametrize("args,message", [
    (("--emotion", "bored=1"), "NAME=VALUE with NAME in happy, sad, angry, surprised"),
    (("--voices", "xx-nowhere"), "no voice"),
    (("--voices", "en-us,en-gb+Zac"), "no voice variant 'Zac'"),
    (("--resolution", "31"), "even number"),
    (("--seconds", "2", "--text-file", "x.txt"), "either --seconds or --text-file"),
])
def test_synth_bad_arguments(tmp_path, args, message):
    r = run_synth(tmp_path / "o", "--clips", 1, *args, "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, r.stderr
