"""The voice gate: the network (shapes, causality, save/load), the mouth it shuts through
speech2latent and the pipeline, ``talker train gate`` with resume, and ``talker add-gate``."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import Z_DIM, speech_like, tiny_pipeline


def _gate(seed: int = 0):
    from talker.models import VoiceGate

    torch.manual_seed(seed)
    return VoiceGate(hidden_size=16, num_layers=1).eval()


def test_voice_gate_gives_one_probability_per_frame_from_the_audio_before_it(tmp_path):
    from talker.models import VoiceGate

    gate = _gate()
    x = speech_like(2.0)
    p = gate.probability(x, 50)
    assert p.shape == (50,) and p.dtype == torch.float32 and ((p > 0) & (p < 1)).all()
    assert gate.probability(x[:16000], 50).shape == (50,)  # short audio: zero-padded to the frames asked
    # the network is causal: with the window's standardisation held fixed, changing the audio from
    # frame 30 on leaves frames 0-29 as they were and changes later ones
    from talker.frontends import log_mel

    mel = log_mel(x, 50)[None]
    later = mel.clone()
    later[:, 120:] = later[:, 120:].flip(1)
    mean, std = mel.mean((1, 2), keepdim=True), mel.std((1, 2), keepdim=True)
    later = (later - later.mean((1, 2), keepdim=True)) / later.std((1, 2), keepdim=True) * std + mean
    with torch.no_grad():
        a, b = gate(mel)[0], gate(later)[0]
    assert torch.allclose(a[:29], b[:29], atol=1e-5) and not torch.allclose(a[31:], b[31:], atol=1e-3)
    # bidirectional: each frame hears its whole window, so the change reaches the frames before it
    torch.manual_seed(0)
    both = VoiceGate(hidden_size=16, num_layers=1, bidirectional=True).eval()
    with torch.no_grad():
        a, b = both(mel)[0], both(later)[0]
    assert a.shape == (50,) and not torch.allclose(a[:29], b[:29], atol=1e-4)
    both.save_pretrained(tmp_path / "both")
    loaded = VoiceGate.from_pretrained(tmp_path / "both")
    assert loaded.config.bidirectional and torch.allclose(loaded.probability(x, 50), both.probability(x, 50), atol=1e-6)
    # loudness hardly matters (the window is standardised; only the log-mel floor sees the level)
    with torch.no_grad():
        quiet, loud = torch.sigmoid(gate(log_mel(0.1 * x, 50)[None])), torch.sigmoid(gate(mel))
    assert torch.allclose(quiet, loud, atol=1e-2)
    gate.save_pretrained(tmp_path / "voice_gate")
    assert (tmp_path / "voice_gate" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = VoiceGate.from_pretrained(tmp_path / "voice_gate", use_safetensors=True)
    assert torch.equal(loaded.probability(x, 50), p)
    with pytest.raises(ValueError, match="multiple of fps"):
        VoiceGate(feature_rate=90)


def test_the_gate_probability_is_pushed_toward_its_decision_by_its_sharpness(tmp_path):
    from talker.frontends import log_mel
    from talker.models import VoiceGate

    x = speech_like(2.0)
    gate = _gate()
    with torch.no_grad():
        logits = gate(log_mel(x, 50)[None])[0]
    for k in (1.0, 5.0):
        gate.register_to_config(sharpness=k)
        p = gate.probability(x, 50)
        assert torch.allclose(p, torch.sigmoid(k * logits), atol=1e-6)
        assert torch.equal(p >= 0.5, logits >= 0)  # the same frames pass at any sharpness
    unsure = (logits.abs() > 0.05) & (logits.abs() < 0.4)  # P between 0.4 and 0.6 as trained
    assert unsure.any()
    sharp = gate.probability(x, 50)
    assert ((sharp - 0.5).abs()[unsure] > (torch.sigmoid(logits) - 0.5).abs()[unsure]).all()
    gate.save_pretrained(tmp_path / "g")
    assert VoiceGate.from_pretrained(tmp_path / "g").config.sharpness == 5.0
    assert VoiceGate().config.sharpness == 5.0  # gates saved before it existed load with the default


def _shaping_s2l(dim: int = 8):
    """A speech2latent with voice activity and a mouth read-out (dimensions 0 and 1 of z_sem)."""
    from talker.models import Speech2Latent

    torch.manual_seed(0)
    model = Speech2Latent(voice_activity=True, mouth_readout=True, feature_normalization="window", hidden_size=32,
                          num_heads=2, ffn_size=64, num_encoder_layers=1, num_decoder_layers=1, latent_dim=dim,
                          pose_predictor_channels=16).eval()
    weight, direction = torch.zeros(dim), torch.zeros(dim)
    weight[:2], direction[:2] = 0.5, torch.tensor([1.0, 0.5])
    model.set_mouth_readout(torch.zeros(dim), weight, 0.2, direction)
    torch.nn.init.normal_(model.out.weight)
    return model


def test_speaking_probability_scales_the_mouth_as_voice_activity_does():
    model = _shaping_s2l()
    feats = torch.randn(1, 80, 81)
    feats[0, :, -1] = 1.0  # voice activity hears speech in all 20 frames
    speaking = torch.ones(1, 20)
    speaking[0, 10:] = 0.0  # the gate hears a voice in the first 10 only
    with torch.no_grad():
        free = model(feats).z_sem[0]
        vad_only = model(feats, shape_mouth=True).z_sem[0]
        gated = model(feats, shape_mouth=True, speaking=speaking).z_sem[0]
        half = model(feats, shape_mouth=True, speaking=torch.full((1, 20), 0.5)).z_sem[0]
    opening = model.mouth_open(free)
    assert (opening[10:] > 0).any()
    assert torch.allclose(gated[:10], vad_only[:10])
    opened = opening[10:] > 0
    assert torch.allclose(model.mouth_open(gated[10:])[opened], torch.zeros(int(opened.sum())), atol=1e-5)
    assert torch.allclose(model.mouth_open(half)[opening > 0], 0.5 * opening[opening > 0], atol=1e-5)


def test_a_speaker_with_a_voice_gate_saves_loads_and_shuts_the_mouth_where_it_hears_no_voice(tmp_path):
    from talker import DAETalkerPipeline

    pipe = tiny_pipeline()
    pipe.register_modules(speech_to_latent=_shaping_s2l(Z_DIM), voice_gate=_gate())
    pipe.speaker = {"name": "tiny", "consent": "random weights for tests"}
    pipe.save_pretrained(tmp_path / "speaker")
    loaded = DAETalkerPipeline.from_pretrained(tmp_path / "speaker")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.voice_gate is not None
    sd, ld = pipe.voice_gate.state_dict(), loaded.voice_gate.state_dict()
    assert all(torch.equal(sd[k], ld[k]) for k in sd)
    x = speech_like(1.0)
    seen = []
    original = loaded.voice_gate.probability

    def shut(wave, n_frames):  # a gate that hears no voice anywhere
        seen.append(n_frames)
        return torch.zeros(n_frames) * original(wave, n_frames)

    s2l = loaded.speech_to_latent
    before = s2l.mouth_open(loaded.predict_latents(x, 25, None, None)["z_sem"])
    loaded.voice_gate.probability = shut
    after = s2l.mouth_open(loaded.predict_latents(x, 25, None, None)["z_sem"])
    frames = loaded(x, sampling_rate=16000, generator=torch.Generator().manual_seed(0), num_inference_steps=1).frames
    assert frames.shape[0] == 25 and seen[-1] == 25  # the pipeline's own calls go through the gate
    # live input does not use it (on its 2-s contexts it cost lip-sync)
    from talker import Speech2Latent

    config = {k: v for k, v in s2l.config.items() if not k.startswith("_")}
    live = Speech2Latent(**{**config, "chunk_frames": 3}).eval()
    live.load_state_dict(s2l.state_dict())
    loaded.register_modules(live_speech_to_latent=live)
    calls = len(seen)
    blocks = [x[i : i + 320] for i in range(0, len(x), 320)]
    assert len(list(loaded.stream(blocks, 16000, live=True, num_inference_steps=1))) == 25 and len(seen) == calls
    assert seen and (before > 1e-3).any() and after.abs().max() < 1e-4


def _dataset(root, n_clips: int = 3, seconds: float = 2.0):
    """A prepared-dataset layout with audio and per-frame speaking truth (what `talker train gate` reads)."""
    import soundfile as sf

    frames = int(seconds * 25)
    clips = []
    for k in range(n_clips):
        path = root / "clips" / f"c{k}"
        path.mkdir(parents=True)
        x = speech_like(seconds, seed=k)
        sf.write(path / "audio.wav", x, 16000)
        level = np.sqrt(np.mean(x[: frames * 640].reshape(frames, 640) ** 2, axis=1))
        np.savez(path / "truth.npz", speaking=level > 0.05)
        np.save(path / "pose.npy", np.zeros((frames, 3), np.float32))
        clips.append({"id": f"c{k}", "source": f"c{k}.mp4", "frames": frames, "duration": seconds})
    (root / "dataset.json").write_text(json.dumps({"clips": clips, "skipped": [], "fps": 25, "resolution": 32}))
    return root


def test_train_gate_resumes_keeps_its_best_step_and_is_added_to_a_speaker(tmp_path, speaker_dir):
    import shutil

    import soundfile as sf

    data = _dataset(tmp_path / "data")
    others = tmp_path / "others"  # recordings of other people, no transcript
    others.mkdir()
    for k in range(2):
        sf.write(others / f"p{k}.wav", speech_like(3.0, seed=20 + k), 16000)
    run = tmp_path / "run"
    base = [sys.executable, "-m", "talker", "train", "gate", "--data", str(data), "--output", str(run),
            "--speech", str(others), "--speech-credit", "two test prompts", "--babble-speeds", "0.15", "--bidirectional",
            "--batch-size", "2", "--window-seconds", "1", "--hidden-size", "8", "--eval-every", "2",
            "--checkpoint-every", "2", "-q"]
    subprocess.run(base + ["--max-steps", "2"], check=True, capture_output=True, text=True)
    done = subprocess.run(base + ["--max-steps", "4", "--resume"], check=True, capture_output=True, text=True)
    assert "resumed from" in done.stdout + done.stderr and "kept step" in done.stdout
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "score" in e] == [2, 4]
    best = json.loads((run / "best.json").read_text())
    assert best["step"] in (2, 4) and 0 <= best["babble_alone_shut"] <= 1
    assert best["score"] == max(e["score"] for e in log if "score" in e)
    figures = json.loads((run / "figures.json").read_text())
    assert figures["steps"] == 4 and figures["train_clips"] + figures["heldout_clips"] == 4  # 3 + 2 prompts joined
    from safetensors.torch import load_file

    from talker.models import VoiceGate

    kept = VoiceGate.from_pretrained(run / "voice_gate").state_dict()  # the moving average, not the step's weights
    trained = load_file(run / "checkpoints" / f"step_{best['step']:07d}" / "model.safetensors")
    assert kept.keys() == trained.keys() and not all(torch.equal(kept[k], trained[k]) for k in kept)
    # a run saved without a moving average of its weights resumes with it off, or says so
    config = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "ema_decay"}))
    for ckpt in (run / "checkpoints").glob("step_*"):
        (ckpt / "ema.safetensors").unlink()
    old = subprocess.run(base + ["--max-steps", "6", "--resume"], capture_output=True, text=True)
    assert old.returncode != 0 and "--ema-decay 0" in old.stderr and "Traceback" not in old.stderr
    row = next(r for r in figures["speech"] if r["voice"] == "recorded:others")
    assert row["credit"] == "two test prompts" and 6.6 / 60 <= row["minutes"] <= 8.1 / 60  # 2 × 3 s + gaps

    speaker = tmp_path / "speaker"
    shutil.copytree(speaker_dir, speaker)
    subprocess.run([sys.executable, "-m", "talker", "add-gate", str(speaker), "--gate", str(run)], check=True,
                   capture_output=True, text=True)
    from talker import DAETalkerPipeline

    loaded = DAETalkerPipeline.from_pretrained(speaker)
    assert loaded.voice_gate is not None and loaded.voice_gate.config.hidden_size == 8
    assert loaded.voice_gate.config.bidirectional
    assert json.loads((speaker / "speaker.json").read_text())["training"]["voice_gate"]["best"]["step"] == best["step"]
    assert "Voice gate: P(a foreground voice speaks)" in (speaker / "README.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "talker", "add-gate", str(speaker), "--gate", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no trained voice gate" in bad.stderr and "Traceback" not in bad.stderr


def test_train_gate_takes_truth_from_voice_activity_where_clips_have_none_and_needs_two_clips(tmp_path):
    from talker.training.gate import load_voices

    data = _dataset(tmp_path / "data", n_clips=2, seconds=4.0)
    truth = [v.speaking for v in load_voices([data])]
    (data / "clips" / "c0" / "truth.npz").unlink()
    guessed = load_voices([data])[0].speaking
    assert guessed.shape == truth[0].shape and set(np.unique(guessed)) <= {0.0, 1.0}
    silent = np.zeros(64000, np.float32)
    import soundfile as sf

    sf.write(data / "clips" / "c0" / "audio.wav", silent, 16000)
    assert load_voices([data])[0].speaking.sum() == 0  # silence is no one speaking
    one = _dataset(tmp_path / "one", n_clips=1)
    r = subprocess.run([sys.executable, "-m", "talker", "train", "gate", "--data", str(one), "--output",
                        str(tmp_path / "run"), "--max-steps", "1", "-q"], capture_output=True, text=True)
    assert r.returncode != 0 and "needs at least 2 clips" in r.stderr and "Traceback" not in r.stderr


def test_training_windows_are_seeded_and_noise_alone_has_no_voice(tmp_path):
    from talker.training.augment import Augmenter
    from talker.training.configs import GateConfig
    from talker.training.gate import draw_example, load_voices

    voices = load_voices([_dataset(tmp_path / "data", n_clips=3)])
    augmenter = Augmenter(babble_sources=[v.audio for v in voices])
    draw = lambda cfg, seed: draw_example(voices, augmenter, cfg, np.random.default_rng(seed))  # noqa: E731
    alone = GateConfig(window_seconds=1.0, noise_share=1.0, babble_share=1.0)
    for seed in range(6):  # babble alone
        x, y = draw(alone, seed)
        assert x.shape == (16000,) and y.shape == (25,) and y.sum() == 0 and np.abs(x).max() > 0
    voiced = GateConfig(window_seconds=1.0, noise_share=0.0)
    (x1, y1), (x2, y2) = draw(voiced, 7), draw(voiced, 7)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and y1.sum() > 0
    assert not np.array_equal(draw(voiced, 8)[0], x1)


def test_one_voice_babble_is_made_of_one_talkers_clips_only():
    from talker.training.augment import Augmenter
    from talker.training.configs import GateConfig
    from talker.training.gate import Voice, draw_example

    t = np.arange(48000) / 16000
    tone = lambda hz: (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)  # noqa: E731
    talk = np.ones(75, np.float32)
    voices = [Voice("a0", tone(300), talk, "a"), Voice("a1", tone(500), talk, "a"),
              Voice("b0", tone(1100), talk, "b"), Voice("b1", tone(1700), talk, "b")]
    augmenter = Augmenter(babble_sources=[v.audio for v in voices])

    def heard(share: float, seed: int) -> set[int]:
        cfg = GateConfig(window_seconds=1.0, noise_share=1.0, babble_share=1.0, one_voice_babble=share)
        x, y = draw_example(voices, augmenter, cfg, np.random.default_rng(seed))
        assert y.sum() == 0
        spectrum = np.abs(np.fft.rfft(x))  # 1 Hz bins
        return {hz for hz in (300, 500, 1100, 1700) if spectrum[hz] > 0.05 * spectrum.max()}

    one = [heard(1.0, seed) for seed in range(12)]
    assert all(h and (h <= {300, 500} or h <= {1100, 1700}) for h in one)
    assert {min(h) < 1000 for h in one} == {True, False}  # both talkers get their turn
    assert any(len(heard(0.0, seed)) >= 3 for seed in range(12))  # without it babble mixes the talkers


def test_recorded_speech_without_transcripts_becomes_clips_with_voice_activity_truth_minus_the_held_out_part(tmp_path):
    import soundfile as sf

    from talker.data.synthetic import in_held_out
    from talker.training.gate import RECORDED_CLIP_SECONDS, load_recorded_voices

    folder = tmp_path / "prompts"
    (folder / "digits").mkdir(parents=True)
    names = [f"digits/{k}" for k in range(12)] + ["hello", "goodbye"]
    for k, name in enumerate(names):
        sf.write(folder / f"{name}.wav", speech_like(2.5, seed=k), 16000)
    sf.write(folder / "hello.flac", speech_like(2.5, seed=99)[::2], 8000)  # the same prompt at a lower rate
    held = [n for n in names if in_held_out(n, 0.3)]
    assert 0 < len(held) < len(names)
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    unreadable = []
    voices = load_recorded_voices(folder, held_out=0.3, progress=False, skipped=unreadable)
    assert [u["source"] for u in unreadable] == [str(folder / "broken.wav")]  # reported, not fatal
    kept = sum(len(v.audio) for v in voices) / 16000
    n = len(names) - len(held)  # each kept recording once, 0.3-1 s of silence before it, one more at the end
    assert n * 2.8 + len(voices) * 0.3 <= kept <= n * 3.5 + len(voices) * 1.0
    for v in voices:
        assert len(v.audio) == len(v.speaking) * 640 and len(v.audio) < (RECORDED_CLIP_SECONDS + 5) * 16000
        assert 0 < v.speaking.mean() < 1  # the recordings speak, the gaps between them do not
    again = load_recorded_voices(folder, held_out=0.3, progress=False)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(voices, again, strict=True))
    everything = load_recorded_voices(folder, held_out=0.0, progress=False)
    assert sum(len(v.audio) for v in everything) > sum(len(v.audio) for v in voices)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "talker", "train", "gate", "--speech", str(empty), "--output",
                        str(tmp_path / "run"), "--max-steps", "1", "-q"], capture_output=True, text=True)
    assert r.returncode != 0 and "no recordings to train on" in r.stderr and "Traceback" not in r.stderr


def test_babble_talkers_at_their_own_speeds_are_other_voices_of_the_same_recordings():
    from talker.training.augment import babble

    src = [np.sin(2 * np.pi * 200 * np.arange(32000) / 16000).astype(np.float32)]  # one 200 Hz "voice"
    plain = babble(16000, np.random.default_rng(0), src, talkers=(1, 1))
    varied = babble(16000, np.random.default_rng(0), src, talkers=(1, 1), speeds=0.2)
    peak = lambda x: np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)  # noqa: E731
    assert abs(peak(plain) - 200) < 2 and 160 <= peak(varied) <= 240 and abs(peak(varied) - 200) > 2
    assert varied.shape == (16000,) and abs(np.sqrt(np.mean(varied**2)) - 1) < 1e-3
    assert np.array_equal(varied, babble(16000, np.random.default_rng(0), src, talkers=(1, 1), speeds=0.2))


def test_the_gate_bench_scores_every_set_and_a_crowd_of_them(tmp_path, monkeypatch):
    from pathlib import Path

    import soundfile as sf

    bench = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("voice_gate", None)
    import voice_gate

    _gate().save_pretrained(tmp_path / "run" / "voice_gate")
    data = _dataset(tmp_path / "data", n_clips=3)
    folder = tmp_path / "unseen"
    folder.mkdir()
    for k in range(4):
        sf.write(folder / f"p{k}.wav", speech_like(3.0, seed=10 + k), 16000)
    out = tmp_path / "gate.json"
    assert voice_gate.main(["--gate", str(tmp_path / "run"), "--set", f"synth={data}", "--speech", f"unseen={folder}",
                            "--draws", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["sets"]) == {"synth", "unseen"} and results["sets"]["synth"]["clips"] == 3
    for row in results["sets"].values():
        assert all(0 <= row[k] <= 1 for k in ("speech_passed", "speech_in_babble_passed", "pauses_shut",
                                               "babble_alone_shut", "one_voice_babble_shut"))
    assert 0 <= results["crowd"]["babble_alone_shut"] <= 1 and results["crowd"]["voices"] == 2
    with pytest.raises(SystemExit):
        voice_gate.main(["--gate", str(tmp_path / "run"), "--set", str(data)])  # no NAME=


def test_the_gate_hears_seconds_around_each_window_and_a_stream_gives_the_same_frames():
    from talker.pipelines.dae_talker.windows import GATE_CONTEXT

    pipe = tiny_pipeline()
    pipe.register_modules(speech_to_latent=_shaping_s2l(Z_DIM), voice_gate=_gate())
    pipe.set_progress_bar_config(disable=True)
    heard = []
    original = pipe.voice_gate.probability

    def listening(wave, n_frames):
        heard.append(n_frames)
        return original(wave, n_frames)

    pipe.voice_gate.probability = listening
    audio = speech_like(8.0)  # 200 frames: windows of 40 every 30
    kw = dict(num_inference_steps=1, window_frames=40, overlap_frames=10, frame_batch_size=8)
    whole = pipe(audio, sampling_rate=16000, generator=torch.Generator().manual_seed(0), **kw)
    # the first window hears its 40 frames and GATE_CONTEXT after; inner ones GATE_CONTEXT on each side
    assert heard[0] == 40 + GATE_CONTEXT and max(heard) == 40 + 2 * GATE_CONTEXT
    pulled = []

    def chunks():
        for i in range(0, len(audio), 1000):
            pulled.append(i + 1000)
            yield audio[i : i + 1000]

    it = pipe.stream(chunks(), 16000, generator=torch.Generator().manual_seed(0), **kw)
    first = next(it)
    assert (40 + GATE_CONTEXT) * 640 <= pulled[-1] <= (40 + GATE_CONTEXT) * 640 + 1000  # the gate's context, no more
    frames = np.stack([first, *it])
    assert frames.shape[0] == 200 and np.abs(frames.astype(int) - whole.frames.astype(int)).max() <= 1
