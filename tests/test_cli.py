"""The `talker` console script, run as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_audio

TALKER = str(Path(sys.executable).parent / "talker")


def talker(*args, env=None, timeout=300):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([TALKER, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout)


def probe(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(v))
        return dict(vcodec=v.codec_context.name, fps=v.average_rate, frames=n, width=v.codec_context.width,
                    height=v.codec_context.height,
                    acodec=a.codec_context.name, adur=float(a.duration * a.time_base))


def test_generate_writes_an_mp4_with_the_right_streams(speaker_dir, tmp_path):
    audio = write_audio(tmp_path / "speech.mp3", 2.6, 44100, 2)
    out = tmp_path / "out.mp4"
    r = talker("generate", "--model", speaker_dir, "--audio", audio, "--out", out, "--steps", 2,
               "--emotion", "happy=0.7", "sad=0.1", "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert "generating" in r.stderr  # the progress bar
    info = probe(out)
    assert info["vcodec"] == "h264" and info["fps"] == 25 and info["frames"] == 65
    # what it says it wrote is what the file holds (the frames are upscaled to carry the watermark)
    assert f"wrote {out}: 65 frames at 25 fps, {info['width']}×{info['height']}, with sound" in r.stdout, r.stdout
    assert info["width"] == 256 and "decoded at 16×16" in r.stdout
    assert info["acodec"] == "aac" and abs(info["adur"] - 2.6) <= 0.04


def test_generate_by_repo_id_with_a_reference_pose_file(hub_cache, tmp_path):
    cache, repo_id = hub_cache
    audio = write_audio(tmp_path / "speech.wav", 1.0)
    pose = tmp_path / "pose.csv"
    pose.write_text("yaw,pitch,roll\n" + "\n".join(f"{i},0,1" for i in range(10)))
    out = tmp_path / "ref.mp4"
    r = talker("generate", "--model", repo_id, "--audio", audio, "--out", out, "--steps", 1,
               "--pose-mode", "reference", "--pose-file", pose, "-q", env={"HF_HUB_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert probe(out)["frames"] == 25


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda d, t: ["--audio", t / "empty.wav"], "empty"),
        (lambda d, t: ["--audio", t / "notes.txt"], "not a readable audio file"),
        (lambda d, t: ["--audio", t / "missing.wav"], "not found"),
        (lambda d, t: ["--audio", t / "long.wav", "--max-seconds", "1"], "too long"),
        (lambda d, t: ["--audio", t / "ok.wav", "--emotion", "bored=1"], "unknown emotion bored"),
        (lambda d, t: ["--audio", t / "ok.wav", "--emotion", "happy"], "NAME=VALUE"),
        (lambda d, t: ["--audio", t / "ok.wav", "--steps", "0"], "num_inference_steps"),
        (lambda d, t: ["--audio", t / "ok.wav", "--pose-mode", "reference", "--pose-file", t / "p.json"], ".csv or .npy"),
        (lambda d, t: ["--audio", t / "ok.wav", "--device", "cuda"], "CUDA is not available"),
        (lambda d, t: ["--audio", t / "ok.wav", "--dtype", "float16", "--device", "cpu"], "runs on a GPU only"),
        (lambda d, t: ["--audio", t / "ok.wav", "--output-size", "0"], "output_size must be a frame side of 16–4096"),
        (lambda d, t: ["--audio", t / "ok.wav", "--pose-mode", "static", "--pose-file", t / "far.csv"], "within ±90"),
    ],
)
def test_bad_input_is_one_clear_line(speaker_dir, tmp_path, make_args, message):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "far.csv").write_text("yaw,pitch,roll\n1000000,0,0\n")
    write_audio(tmp_path / "long.wav", 1.5)
    write_audio(tmp_path / "ok.wav", 0.5)
    out = tmp_path / "out.mp4"
    args = make_args(speaker_dir, tmp_path)
    if "--device" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = talker("generate", "--model", speaker_dir, "--out", out, *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("talker generate: error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def test_output_paths_are_checked_before_any_work(speaker_dir, tmp_path):
    audio = write_audio(tmp_path / "speech.wav", 1.0)
    (tmp_path / "existing.mp4").mkdir()
    for out, message in ((tmp_path / "existing.mp4", "is a folder"), (audio / "out.mp4", "is a file, not a folder"),
                         (tmp_path / "out.avi", "videos are written as .mp4 files")):
        r = talker("generate", "--model", speaker_dir, "--audio", audio, "--out", out)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert message in r.stderr and "generating" not in r.stderr  # refused before any frame was made
    # nothing was written: no hidden temporary file, no folder called out.avi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.mp4", "speech.wav"]
    assert not any((tmp_path / "existing.mp4").iterdir())


def test_missing_model_is_a_clear_error(tmp_path):
    audio = write_audio(tmp_path / "a.wav", 0.5)
    r = talker("generate", "--model", tmp_path / "no-such-speaker", "--audio", audio, "--out", tmp_path / "o.mp4")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "speaker checkpoint not found" in r.stderr


def test_python_m_talker_and_help():
    r = subprocess.run([sys.executable, "-m", "talker", "generate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--pose-mode" in r.stdout and "--frame-batch-size" in r.stdout
    np.testing.assert_equal(subprocess.run([TALKER], capture_output=True).returncode, 2)


def test_generate_many_files_into_a_folder_and_a_bad_one_does_not_stop_the_rest(speaker_dir, tmp_path):
    inputs = tmp_path / "speech"
    inputs.mkdir()
    write_audio(inputs / "a.wav", 1.0)
    write_audio(inputs / "b.flac", 0.6)
    (inputs / "broken.wav").write_bytes(b"RIFF not really")
    (inputs / "notes.txt").write_text("not audio, not picked up")
    extra = write_audio(tmp_path / "c.mp3", 0.4, 44100)
    r = talker("generate", "--model", speaker_dir, "--audio", inputs, extra, "--out", tmp_path / "videos", "--steps", 1,
               "--scheduler", "dpmsolver++")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    # one line for the bad file, naming it once
    assert [line for line in r.stderr.splitlines() if "broken.wav" in line] == [
        f"talker generate: {inputs / 'broken.wav'}: not a readable audio file (corrupt or unsupported; accepted: "
        "wav, flac, ogg, mp3, m4a, webm)"], r.stderr
    assert {p.name for p in (tmp_path / "videos").iterdir()} == {"a.mp4", "b.mp4", "c.mp4"}
    assert probe(tmp_path / "videos" / "b.mp4")["frames"] == 15
    r = talker("generate", "--model", speaker_dir, "--audio", inputs / "a.wav", extra, "--out", tmp_path / "x.mp4")
    assert r.returncode == 2 and "need --out to be a folder" in r.stderr


def test_generate_splits_files_between_processes(speaker_dir, tmp_path):
    """Under a 2-process launch (torchrun, as `accelerate launch` does) each file is made once, by the
    process accelerate gives it to: the first two files to process 0, the third to process 1."""
    import socket

    (tmp_path / "in").mkdir()
    for i in range(3):
        write_audio(tmp_path / "in" / f"s{i}.wav", 0.4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # each process's stdout to its own file (logs/<run>/attempt_0/<rank>/stdout.log): two processes
    # printing into one pipe is not a record of which made what
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "--redirects", "1", "--log-dir", str(tmp_path / "logs"),
           "-m", "talker", "generate", "--model", str(speaker_dir),
           "--audio", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--steps", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    made = {}
    for log in sorted((tmp_path / "logs").glob("*/attempt_0/*/stdout.log")):
        wrote = [line for line in log.read_text().splitlines() if line.startswith("wrote ")]
        made[int(log.parent.name)] = [Path(line.split()[1].rstrip(":")).name for line in wrote]
    assert made == {0: ["s0.mp4", "s1.mp4"], 1: ["s2.mp4"]}, r.stderr[-3000:]
    assert all(probe(tmp_path / "out" / f"s{i}.mp4")["frames"] == 10 for i in range(3))


def test_a_generation_stopped_midway_leaves_no_video(speaker_dir, tmp_path):
    """SIGTERM (what a container or scheduler sends) removes the unfinished file at once; SIGKILL
    cannot be caught, so the next writer in that folder removes what the killed one left."""
    import signal
    import time

    audio = write_audio(tmp_path / "long.wav", 30.0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / f"talk-{sig.name}.mp4"
        with open(tmp_path / "log.txt", "w") as log:
            proc = subprocess.Popen([TALKER, "generate", "--model", str(speaker_dir), "--audio", str(audio), "--out",
                                     str(out), "--steps", "20", "--frame-batch-size", "4"], stdout=log, stderr=log,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"})
            while not list(tmp_path.glob(f".{out.stem}.*.part.mp4")) and proc.poll() is None:
                time.sleep(0.02)  # until frames are being written
            proc.send_signal(sig)
            proc.wait()
        assert not out.exists()
        parts = list(tmp_path.glob(".*.part.mp4"))
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and not parts
            assert "talker generate: terminated" in (tmp_path / "log.txt").read_text()
        else:
            assert proc.returncode == -signal.SIGKILL and len(parts) == 1
    from talker.video import write_video

    write_video(tmp_path / "next.mp4", np.zeros((2, 16, 16, 3), np.uint8))  # the next writer in the folder
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["next.mp4"] and not list(tmp_path.glob(".*part*"))


@pytest.mark.parametrize("stage", ["dae", "s2l", "distill", "refiner"])
def test_train_options_are_the_configs_fields_with_their_defaults(stage):
    """`talker train STAGE` with no options builds exactly the stage's default config, and each
    option sets its field (one source for every default: talker/training/configs.py)."""
    from talker.cli import build_parser
    from talker.training import configs

    config = {"dae": configs.DAEConfig, "s2l": configs.S2LConfig, "distill": configs.DistillConfig,
              "refiner": configs.RefinerConfig}[stage]
    required = {"dae": ["--data", "d", "--output", "o"], "s2l": ["--data", "d", "--dae", "x", "--output", "o"],
                "distill": ["--model", "m", "--data", "d", "--output", "o"],
                "refiner": ["--model", "m", "--data", "d", "--output", "o"]}[stage]
    parser = build_parser()
    assert configs.from_options(config, parser.parse_args(["train", stage, *required])) == config()
    given = configs.from_options(config, parser.parse_args(["train", stage, *required, "--max-steps", "7", "--seed", "3",
                                                            "--mixed-precision", "no"]))
    assert (given.max_steps, given.seed, given.mixed_precision) == (7, 3, "no")
