"""The maintainer's path: synth → prepare → train dae → encode → train s2l → export → load → generate → push."""

import contextlib
import ctypes.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None, reason="needs espeak-ng")
mediapipe = pytest.importorskip("mediapipe", reason="needs requirements-prepare.txt")

TALKER = str(Path(sys.executable).parent / "talker")
TINY_DAE = ("--batch-size", 4, "--base-channels", 8, "--channel-mult", "1,2", "--z-dim", 16)


# commands that neither train (accelerate keeps process-wide state) nor start worker processes run
# in this process, sparing an interpreter start each; the CLI's own process behaviour is tested
# in test_cli.py
IN_PROCESS = {"export", "generate", "add-live", "add-emotion", "add-refiner", "add-live-refiner", "evaluate"}


def talker(*args, timeout=600, check=True):
    args = [str(a) for a in args]
    if args[0] in IN_PROCESS:
        from talker.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
        r = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    else:
        r = subprocess.run([TALKER, *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    talker("synth", "--out", root / "synth", "--clips", 3, "--seconds", 4, "--resolution", 128, "--seed", 2, "-q")
    # a video without audio and one without a face: reported and skipped
    silent = root / "silent.mp4"
    from talker.video import write_video

    write_video(silent, np.zeros((10, 32, 32, 3), np.uint8))
    faceless = root / "faceless.mp4"
    write_video(faceless, (np.random.default_rng(0).random((25, 64, 64, 3)) * 255).astype(np.uint8),
                audio=np.zeros(16000, np.float32), sampling_rate=16000)
    talker("prepare", root / "synth" / "videos", silent, faceless, "--out", root / "data", "--resolution", 16, "-q")
    return root


def test_prepare_writes_the_dataset_and_skips_unusable_videos(dataset):
    index = json.loads((dataset / "data" / "dataset.json").read_text())
    assert len(index["clips"]) == 3
    reasons = {Path(s["source"]).name: s["reason"] for s in index["skipped"]}
    assert "no audio" in reasons["silent.mp4"] and "no detectable face" in reasons["faceless.mp4"]
    for clip in index["clips"]:
        d = dataset / "data" / "clips" / clip["id"]
        with av.open(str(d / "frames.mp4")) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        assert len(frames) == clip["frames"] and frames[0].shape == (16, 16, 3)
        pose = np.load(d / "pose.npy")
        truth = np.load(d / "truth_pose.npy")
        assert pose.shape == truth.shape == (clip["frames"], 3)
        assert np.abs(pose - truth).mean() < 3.0  # degrees, against the synthetic ground truth
        assert np.load(d / "emotion.npy").shape == (clip["frames"], 4)


def test_prepare_frames_the_speaker_with_one_square_that_held_out_clips_take(dataset, tmp_path):
    """Every clip of a new dataset is cut with the speaker's square (the median of the clips' own),
    which another dataset takes with --crop-from at its own picture size; a clip filmed otherwise is
    cut with its own square and says so; --framing clip cuts each with its own."""
    from talker.data.prepare import find_face

    index = json.loads((dataset / "data" / "dataset.json").read_text())
    videos = sorted((dataset / "synth" / "videos").glob("*.mp4"))
    own = np.array([find_face(v).own_square for v in videos])
    square = index["square"]
    assert index["framing"] == "speaker" and (square["width"], square["height"]) == (128, 128)
    assert [square["x0"], square["y0"], square["side"]] == [int(round(v)) for v in np.median(own, 0)]
    assert all(c["crop"] == [square["x0"], square["y0"], square["side"]] and c["framing"] == "speaker"
               for c in index["clips"])
    # the same clip filmed at twice the size, and in a wider picture (another set-up)
    big, wide = tmp_path / "big.mp4", tmp_path / "wide.mp4"
    for path, vf in ((big, "scale=256:256"), (wide, "pad=228:128:50:0")):
        subprocess.run([FFMPEG, "-v", "error", "-i", str(videos[0]), "-vf", vf, "-c:v", "libx264", "-crf", "12",
                        "-c:a", "aac", str(path)], check=True)
    talker("prepare", big, wide, "--out", tmp_path / "held", "--resolution", 16, "--crop-from", dataset / "data", "-q")
    held = json.loads((tmp_path / "held" / "dataset.json").read_text())
    clips = {Path(c["source"]).name: c for c in held["clips"]}
    assert held["square"] == square and clips["big.mp4"]["framing"] == "speaker"
    assert clips["big.mp4"]["crop"] == [2 * square["x0"], 2 * square["y0"], 2 * square["side"]]
    assert clips["wide.mp4"]["framing"] == "own" and clips["wide.mp4"]["crop"] == list(find_face(wide).own_square)
    # each clip its own square; such a dataset gives no square to take, and keeps its framing
    talker("prepare", *videos, "--out", tmp_path / "own", "--resolution", 16, "--framing", "clip", "-q")
    by_clip = json.loads((tmp_path / "own" / "dataset.json").read_text())
    assert by_clip["framing"] == "clip" and "square" not in by_clip
    assert [c["crop"] for c in by_clip["clips"]] == own.tolist()
    r = talker("prepare", big, "--out", tmp_path / "none", "--resolution", 16, "--crop-from", tmp_path / "own",
               check=False)
    assert r.returncode != 0 and "keeps no speaker's square" in r.stderr
    r = talker("prepare", big, "--out", tmp_path / "own", "--resolution", 16, "--framing", "speaker", check=False)
    assert r.returncode != 0 and "frames its clips by clip" in r.stderr


def test_train_encode_export_generate(dataset, tmp_path):
    data, dae, s2l, ckpt = dataset / "data", tmp_path / "dae", tmp_path / "s2l", tmp_path / "speaker"
    talker("train", "dae", "--data", data, "--output", dae, *TINY_DAE, "--max-steps", 3, "--checkpoint-every", 3, "-q")
    assert (dae / "dae" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # no --resolution: the dataset's 16 px (`talker prepare --resolution 16`)
    assert json.loads((dae / "dae" / "unet" / "config.json").read_text())["sample_size"] == 16
    assert json.loads((dae / "train_config.json").read_text())["resolution"] == 16
    assert list((dae / "samples").glob("*.png"))
    z_use = [json.loads(x) for x in (dae / "train_log.jsonl").read_text().splitlines() if "z_use" in x]
    assert len(z_use) == 1 and z_use[0]["step"] == 3 and z_use[0]["x0_error_other_z"] > 0
    talker("encode", "--data", data, "--dae", dae, "-q")
    first = {p.parent.name: np.load(p) for p in (data / "clips").glob("*/latents.npy")}
    # run again (as after `talker prepare` added videos): the same encoder's latents are kept
    talker("encode", "--data", data, "--dae", dae, "-q")
    assert json.loads((data / "latents.json").read_text())["reused_clips"] == len(first) == 3
    assert all(np.array_equal(np.load(data / "clips" / k / "latents.npy"), z) for k, z in first.items())
    talker("train", "s2l", "--data", data, "--dae", dae, "--output", s2l, "--max-steps", 3, "--hidden-size", 32,
           "--window-seconds", 2, "--eval-every", 3, "-q")
    figures = json.loads((s2l / "figures.json").read_text())
    assert len(figures["heldout_pose_mae_deg"]) == 3
    # trained on augmented audio; held out clean and augmented; the best held-out step is kept
    assert figures["augment"] and figures["feature_normalization"] == "window" and figures["best_step"] == 3
    # the kept step is scored by the mouth (a linear read-out of z_sem, fitted on the training
    # clips' synthetic truth), on clean, augmented and whole-pause windows
    mouth = [figures[k] for k in ("heldout_mouth_mse", "heldout_augmented_mouth_mse", "heldout_pauses_mouth_mse")
             if k in figures]
    assert len(mouth) >= 2 and figures["heldout_score"] == pytest.approx(np.mean(mouth))
    assert json.loads((s2l / "best.json").read_text())["step"] == 3
    talker("export", "--dae", dae, "--s2l", s2l, "--data", data, "--out", ckpt, "--speaker-name", "tiny-astro",
           "--consent", "Synthetic speaker from a public-domain photo; tests only.")
    from huggingface_hub import ModelCard

    card = ModelCard.load(ckpt / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "diffusers" and "talking-face" in card.data.tags
    assert "public-domain photo" in card.text
    assert "voice activity (Silero VAD" in card.text and json.loads((ckpt / "speaker.json").read_text())["voice_activity"]
    # the speaker keeps its data's square: new clips of it are framed alike from the speaker alone
    square = json.loads((data / "dataset.json").read_text())["square"]
    assert json.loads((ckpt / "speaker.json").read_text())["square"] == square
    video = sorted((dataset / "synth" / "videos").glob("*.mp4"))[0]
    talker("prepare", video, "--out", tmp_path / "new-clips", "--resolution", 16, "--crop-from", ckpt, "-q")
    (clip,) = json.loads((tmp_path / "new-clips" / "dataset.json").read_text())["clips"]
    assert clip["crop"] == [square["x0"], square["y0"], square["side"]] and clip["framing"] == "speaker"
    s2l_config = json.loads((ckpt / "speech_to_latent" / "config.json").read_text())
    assert s2l_config["voice_activity"] and s2l_config["mouth_readout"]  # the synthetic truth gives a read-out
    # trained with a loss on the read-out opening; the openings' gain measured on the held-out clips
    log = [json.loads(x) for x in (s2l / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["mouth_loss"] > 0 and s2l_config["mouth_gain"] == round(log[-1]["heldout_mouth_gain"], 4) > 0
    assert "toward a shut mouth" in card.text
    from talker import DAETalkerPipeline

    pipe = DAETalkerPipeline.from_pretrained(ckpt)
    assert pipe.speaker["name"] == "tiny-astro" and len(pipe.speaker["reference_pose"]) > 25
    out = tmp_path / "out.mp4"
    wav = next((dataset / "data" / "clips").glob("*/audio.wav"))
    talker("generate", "--model", ckpt, "--audio", wav, "--out", out, "--steps", 2, "--pose-mode", "reference", "-q")
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.width == 256  # upscaled to carry the watermark
    # a streaming speech2latent, continued from the offline one, added to the speaker for live input
    live = tmp_path / "s2l-live"
    talker("train", "s2l", "--data", data, "--dae", dae, "--output", live, "--max-steps", 2, "--hidden-size", 32,
           "--window-seconds", 2, "--eval-every", 2, "--chunk-frames", 3, "--init-from", s2l / "speech_to_latent", "-q")
    r = talker("add-live", ckpt, "--s2l", s2l, check=False)
    assert r.returncode == 2 and "not a streaming speech2latent" in r.stderr
    talker("add-live", ckpt, "--s2l", live)
    with_live = DAETalkerPipeline.from_pretrained(ckpt)
    assert with_live.live_speech_to_latent.config.chunk_frames == 3 and with_live.speech_to_latent.config.chunk_frames == 0
    assert with_live.speaker["live"] == {"chunk_frames": 3, "lookahead_ms": 80}
    assert "chunks of 3 frames, at most 80 ms" in (ckpt / "README.md").read_text()
    audio, _ = __import__("soundfile").read(wav, dtype="float32")
    frames = list(with_live.stream([audio[i : i + 320] for i in range(0, 16000, 320)], 16000, live=True))
    assert len(frames) == 25
    with pytest.raises(Exception, match="chunk-frames"):
        next(pipe.stream([audio[:16000]], 16000, live=True))  # the speaker without it
    # a few-step decoder distilled from the DAE: resumable, exported beside the DDIM decoder, the default
    dist = tmp_path / "distill"
    tiny_distill = ("--teacher-steps", 2, "--pairs", 8, "--batch-size", 4, "--eval-every", 2, "--checkpoint-every", 2)
    talker("train", "distill", "--model", dae, "--data", data, "--output", dist, *tiny_distill, "--max-steps", 2, "-q")
    log = [json.loads(x) for x in (dist / "train_log.jsonl").read_text().splitlines()]
    val = [x["val_psnr"] for x in log if "val_psnr" in x]
    assert len(val) == 1 and set(val[0]["student"]) == {"1", "2", "4", "8"}
    r = talker("train", "distill", "--model", dae, "--data", data, "--output", dist, *tiny_distill, "--max-steps", 3,
               "--resume", "-q")
    assert "resumed from" in r.stdout and "teacher pairs from" in r.stdout, r.stdout
    assert json.loads((dist / "figures.json").read_text())["steps"] == 3
    # continued on the person's own frames alone (no teacher pairs), the loss weighted where they move
    frames_run = tmp_path / "distill-frames"
    talker("train", "distill", "--model", dae, "--data", data, "--output", frames_run, "--pairs", 0,
           "--frames-share", 1, "--motion-weight", 4, "--init-student", dist, "--batch-size", 4, "--max-steps", 2,
           "--eval-every", 2, "-q")
    figures = json.loads((frames_run / "figures.json").read_text())
    assert figures["val_target"] == "frames" and figures["pairs"] == 0 and not (frames_run / "pairs.safetensors").exists()
    from safetensors.torch import load_file

    before = load_file(dist / "distilled_unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(frames_run / "distilled_unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    r = talker("train", "distill", "--model", dae, "--data", data, "--output", tmp_path / "bad", "--pairs", 0, check=False)
    assert r.returncode != 0 and "pairs must be at least 1 unless frames_share is 1" in r.stderr
    fast = tmp_path / "fast-speaker"
    talker("export", "--dae", dae, "--s2l", s2l, "--data", data, "--out", fast, "--speaker-name", "tiny-fast",
           "--consent", "Synthetic speaker from a public-domain photo; tests only.", "--distilled", dist)
    fast_pipe = DAETalkerPipeline.from_pretrained(fast)
    assert fast_pipe.default_decoder == "distilled" and fast_pipe.distilled_unet.config.prediction_type == "sample"
    assert fast_pipe.speaker["training"]["distill"]["steps"] == 3
    # the voices speech2latent learned from, with their minutes, in speaker.json and the card
    voices = fast_pipe.speaker["speech"]
    assert voices and all(v["credit"] == "espeak-ng text-to-speech" and v["minutes"] > 0 for v in voices)
    assert sum(v["minutes"] for v in voices) == pytest.approx(fast_pipe.speaker["minutes"], abs=0.02)
    card = (fast / "README.md").read_text()
    assert all(f"{v['voice']}: " in card for v in voices)
    talker("generate", "--model", fast, "--audio", wav, "--out", tmp_path / "fast.mp4", "-q")
    with av.open(str(tmp_path / "fast.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) > 25
    # a light decoder: a new, narrower student of the distilled decoder (one step), added for live input
    light = tmp_path / "light"
    r = talker("train", "distill", "--model", fast, "--data", data, "--output", tmp_path / "bad-light",
               "--teacher", "distilled", check=False)
    assert r.returncode != 0 and "a distilled teacher renders in 1-8 steps" in r.stderr
    r = talker("train", "distill", "--model", dae, "--data", data, "--output", tmp_path / "bad-light",
               "--teacher", "distilled", "--teacher-steps", 1, check=False)
    assert r.returncode != 0 and "no distilled_unet/ to teach from" in r.stderr
    talker("train", "distill", "--model", fast, "--data", data, "--output", light, "--teacher", "distilled",
           "--teacher-steps", 1, "--student-channels", 8, "--grid-steps", 1, "--grid-share", 0.8, "--pairs", 8,
           "--batch-size", 4, "--max-steps", 2, "--eval-every", 2, "--motion-weight", 4, "-q")
    figures = json.loads((light / "figures.json").read_text())
    assert figures["teacher"] == "distilled" and figures["teacher_steps"] == 1 and figures["student_channels"] == 8
    r = talker("add-light", ckpt, "--decoder", light, check=False)  # a speaker without a distilled decoder
    assert r.returncode == 2 and "distilled_unet" in r.stderr, r.stderr
    talker("add-light", fast, "--decoder", light)
    light_pipe = DAETalkerPipeline.from_pretrained(fast)
    assert light_pipe.light_unet.config.base_channels == 8 and light_pipe.live_decoder == "light"
    assert light_pipe.default_decoder == "distilled" and light_pipe.speaker["training"]["light_decoder"]["steps"] == 2
    talker("generate", "--model", fast, "--audio", wav, "--out", tmp_path / "light.mp4", "--decoder", "light", "-q")
    with av.open(str(tmp_path / "light.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) > 25
    # without --steps, evaluate runs the speaker's default decoder at its default steps, under one progress bar
    r = talker("evaluate", "--model", fast, "--data", data, "--out", tmp_path / "q2" / "quality.json",
               "--clips", 1, "--seconds", 1, "--no-emotion", "--no-noise-test")
    fast_results = json.loads((tmp_path / "q2" / "quality.json").read_text())
    assert fast_results["decoder"] == "distilled" and list(fast_results["steps"]) == ["1"]
    assert r.stderr.count("evaluating (distilled, 1 steps)") >= 1 and "75/75" in r.stderr, r.stderr[-2000:]
    r = talker("evaluate", "--model", fast, "--data", data, "--out", tmp_path / "q3.json", "--steps", "9", check=False)
    assert r.returncode == 2 and "renders in 1–8 steps" in r.stderr
    # a new run can start from an exported speaker (fine-tuning, or carrying training over)
    talker("train", "dae", "--data", data, "--output", tmp_path / "again", *TINY_DAE, "--max-steps", 1,
           "--checkpoint-every", 1, "--sample-every", 100, "--init-from", ckpt, "-q")
    assert json.loads((tmp_path / "again" / "train_config.json").read_text())["extra"]["init_from"] == str(ckpt)
    # the quality benchmark runs on the held-out truth and writes its JSON and plot
    talker("evaluate", "--model", ckpt, "--data", data, "--out", tmp_path / "q" / "quality.json", "--steps", "1,2",
           "--clips", 1, "--seconds", 1, "--no-emotion", "-q")
    results = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert set(results["steps"]) == {"1", "2"} and (tmp_path / "q" / "quality.png").is_file()
    m = results["steps"]["2"]["mean"]
    assert np.isfinite(m["psnr"]) and np.isfinite(m["psnr_upper_bound"]) and m["frames"] == 25
    assert m["jitter_fresh_noise"] > m["jitter_fixed_noise"]  # fresh noise per frame flickers
    assert "open_ratio" in m and "silent_closed" in m
    assert set(results["noise_only"]) == {"pink", "brown", "hum", "babble", "mean"}
    assert all(0 <= v <= 1 for v in results["noise_only"].values())
    # the real-speech benchmark runs on held-out clips with truth and writes its JSON
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import real_speech

    out = tmp_path / "real_speech.json"
    assert real_speech.main(["--model", str(ckpt), "--real", str(data), "--espeak", str(data), "--out", str(out),
                             "--clips", "1", "--seconds", "1", "--noise-seconds", "1", "--babble-draws", "2"]) == 0
    bench = json.loads(out.read_text())["sets"]
    assert set(bench) == {"real", "real_noisy", "real_autoencoded", "noise_only", "noise_only_babble_draws", "espeak"}
    draws = bench["noise_only_babble_draws"]
    assert len(draws["draws"]) == 2 and draws["draws"][0] == bench["noise_only"]["babble"]
    assert draws["mean"] == pytest.approx(np.mean(draws["draws"]))
    from talker.defaults import DEFAULT_STEPS

    # this speaker has no distilled decoder: its frames go through DDIM at the default steps
    assert bench["real_autoencoded"]["mean"]["steps"] == DEFAULT_STEPS and "silent_closed" in bench["real_autoencoded"]["mean"]
    assert bench["real"]["mean"]["clips"] == 1 and bench["real_noisy"]["per_clip"][0]["noise"] == "pink"
    assert bench["real"]["truth_size"] == bench["espeak"]["truth_size"] == 16  # no refiner: the crops themselves
    # and live, from 20-ms blocks through the speaker's streaming speech2latent
    assert real_speech.main(["--model", str(ckpt), "--real", str(data), "--espeak", str(data), "--out", str(out),
                             "--clips", "1", "--seconds", "1", "--live"]) == 0
    live_bench = json.loads(out.read_text())
    assert live_bench["live"] and set(live_bench["sets"]) == {"real", "espeak"}
    assert live_bench["sets"]["real"]["per_clip"][0]["frames"] == 25
    # offline lip-sync alone (to set against the live figures), with the command that made it
    assert real_speech.main(["--model", str(ckpt), "--real", str(data), "--out", str(out), "--clips", "1",
                             "--seconds", "1", "--no-noise"]) == 0
    lips_only = json.loads(out.read_text())
    assert not lips_only["live"] and set(lips_only["sets"]) == {"real"} and "--no-noise" in lips_only["command"]


def test_decoder_fit_bench_scores_each_clips_rendering(dataset, speaker_dir, tmp_path, monkeypatch):
    """bench/decoder_fit.py: each clip's frames encoded and decoded, PSNR against themselves."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import decoder_fit

    out = tmp_path / "fit.json"
    data = str(dataset / "data")
    assert decoder_fit.main(["--model", str(speaker_dir), "--data", data, "--out", str(out), "--clips", "2",
                             "--every", "7", "--frames", "3"]) == 0
    fit = json.loads(out.read_text())["datasets"][data]
    rows = fit["per_clip"]
    assert fit["clips"] == len(rows) == 2 and all(r["frames"] == 3 for r in rows)
    # random weights render noise, far from the frames; a perfect decoder would give ~60 dB
    assert all(0 < r["psnr"] < 20 for r in rows)
    assert fit["psnr_mean"] == pytest.approx(np.mean([r["psnr"] for r in rows]), abs=1e-3)
    assert all(r["psnr_best_shift"] >= r["psnr_cut"] and 0 <= r["best_shift_px"] <= 2**0.5 for r in rows)
    assert "psnr_fitted_latent" not in rows[0]


def test_decoder_fit_bench_fits_a_latent_that_the_decoder_renders_nearer_the_frame(dataset, speaker_dir, tmp_path,
                                                                                   monkeypatch):
    """--fit-latent-steps: each frame's z_sem fitted through the decoder; the decoder's weights untouched."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import decoder_fit
    from talker.pipelines import DAETalkerPipeline
    from talker.training.distill import frames_to_x0
    from talker.training.refiner import psnr

    pipe = DAETalkerPipeline.from_pretrained(speaker_dir)
    pipe.set_progress_bar_config(disable=True)
    ae = pipe.autoencoder_for(None)
    steps = pipe.default_steps(None)
    weights = {k: v.clone() for k, v in ae.unet.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x_T = pipe.prepare_fixed_noise(g)

    def rendered(z):
        return frames_to_x0(ae.decode(z, x_T, num_inference_steps=steps))

    z_star = torch.randn(2, ae.unet.config.z_dim, generator=g)
    truth = rendered(z_star)
    start = z_star + torch.randn(z_star.shape, generator=g)
    fitted = decoder_fit.fit_latent(ae, start, truth, x_T, steps, 40, lr=0.05)
    assert psnr(rendered(fitted), truth) > psnr(rendered(start), truth) + 1
    assert all(torch.equal(v, ae.unet.state_dict()[k]) for k, v in weights.items())
    assert all(p.requires_grad for p in ae.unet.parameters())

    out = tmp_path / "fit.json"
    data = str(dataset / "data")
    assert decoder_fit.main(["--model", str(speaker_dir), "--data", data, "--out", str(out), "--clips", "1",
                             "--every", "7", "--frames", "2", "--fit-latent-steps", "2"]) == 0
    fit = json.loads(out.read_text())
    row = fit["datasets"][data]["per_clip"][0]
    assert fit["fit_latent_steps"] == 2 and row["latent_shift"] > 0 and 0 < row["psnr_fitted_latent"] < 60
    z = torch.tensor([[3.0, 4.0], [0.0, 4.0], [3.0, 0.0]])  # |z| 5, 4, 3; distances 3, 4, 5
    assert decoder_fit.latent_spread(z) == pytest.approx((3 / 5 + 4 / 5 + 3 / 4 + 5 / 4 + 4 / 3 + 5 / 3) / 6, abs=1e-3)
    assert fit["datasets"][data]["psnr_fitted_latent_mean"] == row["psnr_fitted_latent"]


def test_train_refiner_on_the_speakers_own_frames_and_resume(dataset, speaker_dir, tmp_path):
    """`prepare --refiner-resolution` keeps the crops at 4×; `train refiner` learns them from what
    the speaker's decoder makes of its frames; resumable; the speaker then renders at 4×."""
    data = tmp_path / "data"
    talker("prepare", dataset / "synth" / "videos", "--out", data, "--resolution", 16, "--refiner-resolution", 64, "-q")
    index = json.loads((data / "dataset.json").read_text())
    assert index["refiner_resolution"] == 64
    for clip in index["clips"]:
        with av.open(str(data / "clips" / clip["id"] / "frames_64.mp4")) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        assert len(frames) == clip["frames"] and frames[0].shape == (64, 64, 3)
    r = talker("prepare", dataset / "synth" / "videos", "--out", tmp_path / "bad", "--resolution", 16,
               "--refiner-resolution", 40, check=False)
    assert r.returncode != 0 and "--refiner-resolution must be 16 × 2, 4, 8" in r.stderr
    run = tmp_path / "refiner"
    tiny = ("--frames", 12, "--patch", 8, "--channels", 8, "--batch-size", 2, "--eval-every", 2, "--checkpoint-every", 2,
            "--warp-reference")
    talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", run, *tiny, "--max-steps", 2, "-q")
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2]
    assert {"psnr_refined", "psnr_bicubic", "sharpness_refined", "sharpness_bicubic"} <= set(log[0])
    assert (run / "samples" / "step_0000002.png").is_file()
    from safetensors.torch import load_file

    cached = load_file(run / "inputs.safetensors")
    assert cached["lo"].shape == (12, 3, 16, 16) and cached["hi"].shape == (12, 3, 64, 64)
    first = load_file(run / "refiner" / "diffusion_pytorch_model.safetensors")
    r = talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", run, *tiny, "--max-steps", 4,
               "--resume")
    assert "resumed from" in r.stdout + r.stderr and "held-out PSNR" in r.stdout
    assert json.loads((run / "figures.json").read_text())["steps"] == 4
    after = load_file(run / "refiner" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(first[k], after[k]) for k in first)
    assert not torch.equal(after["warp.weight"], torch.zeros_like(after["warp.weight"]))  # the flow and mask learn
    # --init-from continues a trained refiner in a new run; one built otherwise is refused first
    r = talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", tmp_path / "bad-init", *tiny,
               "--num-blocks", 2, "--max-steps", 1, "--init-from", run / "refiner", check=False)
    assert r.returncode != 0 and "not a refiner of this run's configuration" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad-init" / "inputs.safetensors").exists()
    talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", tmp_path / "more", *tiny,
           "--max-steps", 1, "--init-from", run / "refiner", "-q")
    more = load_file(tmp_path / "more" / "refiner" / "diffusion_pytorch_model.safetensors")
    assert max((more[k] - after[k]).abs().max().item() for k in after) < 0.01  # one small step from it
    # --adv-weight trains a patch discriminator alongside, checkpointed with the refiner and resumed
    adv = tmp_path / "adv"
    talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", adv, *tiny, "--max-steps", 2,
           "--adv-weight", 0.1, "--disc-channels", 4, "--init-from", run / "refiner", "-q")
    disc = load_file(adv / "checkpoints" / "step_0000002" / "model_1.safetensors")
    assert any(k.endswith("weight.original") for k in disc)  # spectral-normalised convolutions
    assert "d_loss" in json.loads((adv / "train_log.jsonl").read_text().splitlines()[-1])
    r = talker("train", "refiner", "--model", speaker_dir, "--data", data, "--output", adv, *tiny, "--max-steps", 3,
               "--resume")
    assert "resumed from" in r.stdout + r.stderr and json.loads((adv / "figures.json").read_text())["steps"] == 3
    resumed = load_file(adv / "checkpoints" / "step_0000003" / "model_1.safetensors")
    assert any(not torch.equal(disc[k], resumed[k]) for k in disc)  # the discriminator trained on
    from talker import DAETalkerPipeline

    # `add-refiner` stores it in a speaker folder, which then renders at its size
    shutil.copytree(speaker_dir, tmp_path / "refined-speaker")
    r = talker("add-refiner", tmp_path / "refined-speaker", "--refiner", data, check=False)
    assert r.returncode != 0 and "has no refiner" in r.stderr and "Traceback" not in r.stderr
    talker("add-refiner", tmp_path / "refined-speaker", "--refiner", run)
    pipe = DAETalkerPipeline.from_pretrained(tmp_path / "refined-speaker")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.refiner.config.warp_reference and pipe.speaker["output_resolution"] == 64
    assert pipe.speaker["training"]["refiner"]["steps"] == 4
    wav = next((data / "clips").glob("*/audio.wav"))
    assert pipe(str(wav), num_inference_steps=1).frames.shape[1:] == (64, 64, 3)
    # `add-live-refiner`: a refiner of the same size, for live input, next to the speaker's refiner
    from talker.models import Refiner

    Refiner(in_resolution=16, scale=2, channels=4, num_blocks=1).save_pretrained(tmp_path / "x2")
    for speaker, source, message in ((speaker_dir, run, "no 'refiner' component"),
                                     (tmp_path / "refined-speaker", tmp_path / "x2", "upscales ×2")):
        r = talker("add-live-refiner", speaker, "--refiner", source, check=False)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
    talker("add-live-refiner", tmp_path / "refined-speaker", "--refiner", run)
    live = DAETalkerPipeline.from_pretrained(tmp_path / "refined-speaker").live_refiner
    assert live is not None and live.out_resolution == 64 and live.config.channels == 8
    card = (tmp_path / "refined-speaker" / "README.md").read_text()
    assert "Live refiner: live input's, narrower (8 channels, 6 blocks)" in card
    # the refiner benchmark runs on held-out clips with truth and writes its JSON and contact sheet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import refiner as refiner_bench

    out = tmp_path / "refiner.json"
    assert refiner_bench.main(["--model", str(tmp_path / "refined-speaker"), "--data", str(data), "--out", str(out),
                               "--clips", "1", "--seconds", "1", "--no-speed"]) == 0
    results = json.loads(out.read_text())
    assert results["size"] == [16, 64] and results["frames"]["mean"]["clips"] == 1
    assert {"psnr_refined", "psnr_bicubic", "sharpness_refined"} <= set(results["frames"]["mean"])
    assert {"jitter_ratio_refined", "jitter_ratio_decoder", "mouth_corr_refined"} <= set(results["speech"]["mean"])
    assert out.with_suffix(".png").is_file()
    # --live: the live refiner on the live decoder's frames, next to the speaker's refiner
    assert refiner_bench.main(["--model", str(tmp_path / "refined-speaker"), "--data", str(data), "--out", str(out),
                               "--clips", "1", "--seconds", "1", "--live"]) == 0
    live_results = json.loads(out.read_text())
    assert {"psnr_refined", "psnr_full_refiner", "sharpness_full_refiner"} <= set(live_results["frames"]["mean"])
    assert "--live" in live_results["command"] and "speech" not in live_results and "speed" not in live_results
    # the real-speech benchmark compares refined frames with the truth crops at the refiner's size
    # where the dataset keeps them, else with the dataset's own crops
    import real_speech

    for folder, side in ((data, 64), (dataset / "data", 16)):
        assert real_speech.main(["--model", str(tmp_path / "refined-speaker"), "--real", str(folder), "--out", str(out),
                                 "--clips", "1", "--seconds", "1", "--noise-seconds", "1"]) == 0
        sets = json.loads(out.read_text())["sets"]
        assert sets["real"]["truth_size"] == sets["real_autoencoded"]["truth_size"] == side
    # `talker evaluate` compares the decoder's own frames with the dataset's, refiner or not
    talker("evaluate", "--model", tmp_path / "refined-speaker", "--data", data, "--out", tmp_path / "q.json",
           "--clips", 1, "--seconds", 1, "--no-emotion", "--no-noise-test", "-q")
    quality = json.loads((tmp_path / "q.json").read_text())
    assert quality["resolution"] == 16 and np.isfinite(next(iter(quality["steps"].values()))["mean"]["psnr"])
    # a dataset without refiner crops is refused before any work
    r = talker("train", "refiner", "--model", speaker_dir, "--data", dataset / "data", "--output", tmp_path / "no",
               check=False)
    assert r.returncode != 0 and "prepare it with --refiner-resolution" in r.stderr


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "dae" / "unet" / "diffusion_pytorch_model.safetensors")


def test_resume_continues_exactly(dataset, tmp_path):
    data = dataset / "data"
    talker("train", "dae", "--data", data, "--output", tmp_path / "straight", *TINY_DAE, "--max-steps", 4,
           "--checkpoint-every", 2, "--sample-every", 100, "-q")
    talker("train", "dae", "--data", data, "--output", tmp_path / "split", *TINY_DAE, "--max-steps", 2,
           "--checkpoint-every", 2, "--sample-every", 100, "-q")
    # a setting given again with another value does not change a resumed run: it continues with its
    # saved configuration (here: the learning rate) and says so
    r = talker("train", "dae", "--data", data, "--output", tmp_path / "split", *TINY_DAE, "--max-steps", 4,
               "--checkpoint-every", 2, "--sample-every", 100, "--lr", 0.5, "--resume")
    out = r.stdout + r.stderr
    assert "resumed from" in out and "step 2" in out
    assert "saved settings: lr 0.0001 (not 0.5)" in out
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    log = [json.loads(x) for x in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [2, 4]
    # resuming a finished run exports its weights again and says there was nothing left to train
    r = talker("train", "dae", "--data", data, "--output", tmp_path / "split", *TINY_DAE, "--max-steps", 4,
               "--resume", "-q")
    assert "4 steps" in r.stdout and "no steps left to train" in r.stdout and "nan" not in r.stdout
    c = _weights(tmp_path / "split")
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_two_process_training_through_accelerate(dataset, tmp_path):
    """`talker train dae` under torchrun with 2 CPU processes (gloo): accelerate sees MULTI_CPU.
    A fresh interpreter: forking this test process, whose OpenMP threads are running, can hang."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "talker", "train", "dae", "--data", str(dataset / "data"),
           "--output", str(tmp_path / "ddp"), *map(str, TINY_DAE), "--batch-size", "2", "--max-steps", "2",
           "--checkpoint-every", "2", "--sample-every", "100", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    figures = json.loads((tmp_path / "ddp" / "figures.json").read_text())
    assert figures["processes"] == 2 and figures["steps"] == 2
    assert (tmp_path / "ddp" / "dae" / "encoder" / "config.json").is_file()


def test_push_refuses_without_consent_or_card_and_uploads_otherwise(speaker_dir, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import HfApi

    from talker.errors import CheckpointError
    from talker.training.export import push_speaker, write_model_card

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or f"https://hf.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"])))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(speaker_dir, ckpt)
    with pytest.raises(CheckpointError, match="no model card"):
        push_speaker(ckpt, "me/tiny")
    speaker = json.loads((ckpt / "speaker.json").read_text())
    write_model_card(ckpt, speaker=speaker)
    speaker["consent"] = "  "
    (ckpt / "speaker.json").write_text(json.dumps(speaker))
    with pytest.raises(CheckpointError, match="no consent statement"):
        push_speaker(ckpt, "me/tiny")
    assert calls == []
    speaker["consent"] = "I agree to this model of my face being shared."
    (ckpt / "speaker.json").write_text(json.dumps(speaker))
    push_speaker(ckpt, "me/tiny", private=True)
    assert calls[0][:2] == ("create", "me/tiny") and calls[0][2]["private"] is True
    assert calls[1] == ("upload", "me/tiny", str(ckpt))


def test_s2l_resume_repeats_the_augmented_batches(dataset, tmp_path):
    """The augmentation is drawn from the seed and the step: a resumed run ends where a straight one does."""
    from safetensors.torch import load_file

    data, dae = dataset / "data", tmp_path / "dae"
    talker("train", "dae", "--data", data, "--output", dae, *TINY_DAE, "--max-steps", 1, "--checkpoint-every", 1, "-q")
    talker("encode", "--data", data, "--dae", dae, "-q")
    assert json.loads((data / "latents.json").read_text())["reused_clips"] == 0  # other weights: encoded anew
    common = ("--data", data, "--dae", dae, "--hidden-size", 32, "--window-seconds", 2, "--checkpoint-every", 2,
              "--eval-every", 2, "-q")
    talker("train", "s2l", "--output", tmp_path / "straight", "--max-steps", 4, *common)
    talker("train", "s2l", "--output", tmp_path / "split", "--max-steps", 2, *common)
    talker("train", "s2l", "--output", tmp_path / "split", "--max-steps", 4, "--resume", *common)
    a, b = (load_file(tmp_path / run / "checkpoints" / "step_0000004" / "model.safetensors") for run in ("straight", "split"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    logs = [[json.loads(x) for x in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
            for run in ("straight", "split")]
    assert [e["step"] for e in logs[1]] == [2, 4] and logs[0][-1]["loss"] == pytest.approx(logs[1][-1]["loss"], rel=1e-5)
    # what is scored and kept is the moving average of the weights (resumed with the run), not the weights as trained
    kept = [load_file(tmp_path / run / "speech_to_latent" / "diffusion_pytorch_model.safetensors") for run in ("straight", "split")]
    assert kept[0].keys() == kept[1].keys() and all(torch.allclose(kept[0][k], kept[1][k], atol=1e-6) for k in kept[0])
    step = json.loads((tmp_path / "straight" / "best.json").read_text())["step"]
    trained = load_file(tmp_path / "straight" / "checkpoints" / f"step_{step:07d}" / "model.safetensors")
    assert any(not torch.allclose(kept[0][k], v) for k, v in trained.items() if v.is_floating_point())


FFMPEG = __import__("shutil").which("ffmpeg")
# what phones and cameras record, made from a synth clip with the ffmpeg program
PHONE_VIDEOS = {
    "30fps": ["-vf", "fps=30"],
    "29.97fps": ["-vf", "fps=30000/1001"],
    "60fps": ["-vf", "fps=60"],
    "variable-rate": ["-vf", r"fps=30,select='not(eq(mod(n\,4)\,1))'", "-vsync", "vfr"],
    "hevc-1080p": ["-vf", "scale=1080:1080,pad=1920:1080:420:0", "-c:v", "libx265", "-x265-params", "log-level=error",
                   "-tag:v", "hvc1"],
    "portrait-rotated": ["-vf", "scale=1080:1080,pad=1080:1920:0:420,transpose=1", "-metadata:s:v:0", "rotate=90"],
    "sound-first": ["-vf", "trim=start=0.4", "-vsync", "passthrough"],  # the picture starts 0.4 s after the sound
    "picture-first": ["-af", "atrim=start=0.4"],  # the sound starts 0.4 s after the picture
}


def _sync_signals(clip_dir):
    """(per-frame motion of the face crops, 400 Hz loudness envelope) of a prepared clip."""
    import soundfile as sf

    from talker.video import read_video

    frames = read_video(clip_dir / "frames.mp4").frames.astype(np.float32)
    motion = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    audio, _ = sf.read(clip_dir / "audio.wav", dtype="float32")
    return motion, np.convolve(np.abs(audio), np.ones(160) / 160, "same")[::40], len(frames), len(audio)


def _lag(a, b, max_lag):
    """The shift of ``a`` against ``b`` (a[t + lag] ≈ b[t]) with the highest correlation."""
    a, b = (a - a.mean()) / (a.std() + 1e-9), (b - b.mean()) / (b.std() + 1e-9)
    n = min(len(a), len(b)) - 2 * max_lag
    scores = {lag: float(np.dot(a[max_lag + lag : max_lag + lag + n], b[max_lag : max_lag + n])) for lag in
              range(-max_lag, max_lag + 1)}
    return max(scores, key=scores.get)


@pytest.mark.skipif(FFMPEG is None, reason="the variants are made with the ffmpeg program")
def test_prepare_takes_the_videos_phones_record_and_keeps_lip_sync(dataset, tmp_path):
    """30, 29.97, 60 fps and variable rate, HEVC at 1080p, portrait with a display rotation, and
    sound that starts before or after the picture: prepared in sync with the picture, to one frame."""
    source = tmp_path / "phone" / "source.mp4"  # the first 2.4 s of a synth clip
    source.parent.mkdir()
    subprocess.run([FFMPEG, "-v", "error", "-i", str(sorted((dataset / "synth" / "videos").glob("*.mp4"))[0]),
                    "-t", "2.4", "-c:v", "libx264", "-c:a", "aac", str(source)], check=True)
    paths = []
    for name, args in PHONE_VIDEOS.items():
        path = tmp_path / "phone" / f"{name}.mp4"
        codec = [] if "-c:v" in args else ["-c:v", "libx264"]
        subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(source), *args, *codec, "-c:a", "aac", str(path)],
                       check=True)
        paths.append(path)
    talker("prepare", source, *paths, "--out", tmp_path / "data", "--resolution", 32, "-q")
    index = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert not index["skipped"], index["skipped"]
    clips = {Path(c["source"]).stem: tmp_path / "data" / "clips" / c["id"] for c in index["clips"]}
    motion, sound, n, samples = _sync_signals(clips[source.stem])
    for name in PHONE_VIDEOS:
        m, s, frames, audio_samples = _sync_signals(clips[name])
        assert audio_samples == frames * 640 and abs(frames - n) <= 11, name  # 25 fps, 0.4 s less where trimmed
        video_lag = _lag(m, motion, 12)  # in frames
        sound_lag = _lag(s, sound, 200) / 16  # 400 Hz envelope → frames
        expected = -10 if name == "sound-first" else 0  # the picture starts 10 frames in
        assert video_lag == expected and abs(sound_lag - video_lag) <= 1, (name, video_lag, sound_lag)
    # the rotated portrait video was turned upright: its face was found in every frame like the others'
    assert all(c["face_found"] == 1.0 for c in index["clips"])
    # a recorded take labelled with the emotion it was recorded in, every frame
    talker("prepare", source, "--out", tmp_path / "happy", "--resolution", 32, "--emotion", "happy=1", "-q")
    (clip,) = json.loads((tmp_path / "happy" / "dataset.json").read_text())["clips"]
    labels = np.load(tmp_path / "happy" / "clips" / clip["id"] / "emotion.npy")
    assert labels.shape == (clip["frames"], 4) and (labels == [1, 0, 0, 0]).all()
    assert not any((tmp_path / "data" / "clips").glob("*/emotion.npy"))  # unlabelled unless told
    r = talker("prepare", source, "--out", tmp_path / "bad", "--emotion", "joyful=1", check=False)
    assert r.returncode != 0 and "NAME in happy, sad, angry, surprised" in r.stderr and not (tmp_path / "bad").exists()


def test_training_killed_at_a_random_step_resumes_to_the_same_weights(dataset, tmp_path):
    """SIGKILL at a random moment (mid-step or mid-checkpoint): the resumed run loses at most one
    checkpoint interval and ends with the weights of a run that was never interrupted."""
    import random
    import signal
    import time

    data, every, total = dataset / "data", 3, 12
    args = ("train", "dae", "--data", data, *TINY_DAE, "--max-steps", total, "--checkpoint-every", every,
            "--sample-every", 1000, "-q")
    talker(*args, "--output", tmp_path / "straight")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([TALKER, *map(str, args), "--output", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first = killed / "checkpoints" / f"step_{every:07d}"
    while not first.is_dir() and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.3))  # somewhere in the next steps or checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    last_logged = max((json.loads(x)["step"] for x in (killed / "train_log.jsonl").read_text().splitlines()
                       if x.strip().endswith("}")), default=0) if (killed / "train_log.jsonl").is_file() else 0
    r = talker(*args[:-1], "--output", killed, "--resume")
    resumed = int(r.stdout.split(" at step ")[1].split()[0]) if " at step " in r.stdout else 0
    assert resumed >= every and resumed >= last_logged - every, r.stdout  # at most one interval lost
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not list((killed / "checkpoints").glob(".partial-*"))
