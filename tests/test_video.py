"""mp4 writing and reading: H.264 yuv420p + AAC, lengths, resampling, no partial files."""

import av
import numpy as np
import pytest
from conftest import speech_like, write_audio

from talker.errors import VideoError
from talker.video import VideoWriter, read_video, write_video


def moving_frames(n, h=32, w=48):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, (i * 2) % w : (i * 2) % w + 6] = (200, 80, 40)
        frames[i, h // 2 :, :, 2] = 120
    return frames


def streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        n = sum(1 for _ in c.decode(v))
        info = dict(vcodec=v.codec_context.name, pix_fmt=v.codec_context.pix_fmt, rate=v.average_rate,
                    frames=n, size=(v.codec_context.width, v.codec_context.height))
        if a is not None:
            info.update(acodec=a.codec_context.name, adur=float(a.duration * a.time_base))
        return info


def test_write_video_with_audio_file(tmp_path):
    wav = write_audio(tmp_path / "s.wav", 2.0, 22050)
    out = write_video(tmp_path / "out.mp4", moving_frames(50), audio=wav, fps=25)
    info = streams(out)
    assert info["vcodec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["rate"] == 25
    assert info["frames"] == 50 and info["size"] == (48, 32)
    assert info["acodec"] == "aac" and abs(info["adur"] - 2.0) <= 0.04


def test_write_video_with_audio_array_and_read_back(tmp_path):
    audio = speech_like(1.6, 16000)
    out = write_video(tmp_path / "o.mp4", moving_frames(40), audio=audio, fps=25, sampling_rate=16000, crf=0)
    frames, back, fps = read_video(out)
    assert fps == 25 and frames.shape == (40, 32, 48, 3)
    assert np.abs(frames.astype(int) - moving_frames(40).astype(int)).mean() < 3
    assert abs(len(back) - len(audio)) <= 0.04 * 16000
    n = min(len(back), len(audio))
    assert np.corrcoef(back[:n], audio[:n])[0, 1] > 0.9  # the same sound, not just the same length


def test_read_video_resamples_to_25_fps(tmp_path):
    path = tmp_path / "30fps.mp4"
    write_video(path, moving_frames(60), fps=30)  # 2 s at 30 fps
    frames, audio, fps = read_video(path, fps=25)
    assert frames.shape[0] == 50 and audio is None


def test_odd_sizes_are_padded_and_errors_leave_no_file(tmp_path):
    out = write_video(tmp_path / "odd.mp4", moving_frames(5, 15, 21))
    assert streams(out)["size"] == (22, 16)
    with pytest.raises(VideoError, match="uint8 RGB"):
        write_video(tmp_path / "bad.mp4", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "aborted.mp4") as w:
            w.write(moving_frames(3))
            raise RuntimeError("generation failed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_unwritable_and_unreadable_paths(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VideoError, match="cannot write"):
        write_video(blocker / "out.mp4", moving_frames(2))
    with pytest.raises(VideoError, match="not found"):
        read_video(tmp_path / "none.mp4")
    blocker.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError):
        read_video(blocker)


def test_a_folder_made_at_the_path_while_writing_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "clip.mp4"
    w = VideoWriter(out, 25)
    w.write(np.zeros((3, 16, 16, 3), np.uint8))
    out.mkdir()  # someone else took the name meanwhile
    with pytest.raises(VideoError, match="cannot write"):
        w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] and out.is_dir()


def test_parts_left_by_killed_writers_are_removed_by_the_next_writer(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".talk.{int(dead.stdout)}-abc123.part.mp4"
    mine = tmp_path / f".other.{__import__('os').getpid()}-xyz789.part.mp4"  # a live writer's: kept
    stale.write_bytes(b"half a video")
    mine.write_bytes(b"being written")
    write_video(tmp_path / "next.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "next.mp4"])


def test_a_stop_while_a_writer_is_set_up_leaves_no_hidden_file(tmp_path, monkeypatch):
    """A stop (SIGTERM raised as an exception, Ctrl-C) can land after the hidden file exists but
    before a ``with`` block could drop it: in the writer's set-up, or between it and the block."""
    import talker.video as video

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(av, "open", stopped)  # the stop lands while the container is being opened
        with pytest.raises(KeyboardInterrupt):
            VideoWriter(tmp_path / "a.mp4")
    def listed():  # this test's files among the process's unfinished ones
        return [p for p in video._UNFINISHED if p.parent == tmp_path]

    assert list(tmp_path.iterdir()) == [] and not listed()

    w = VideoWriter(tmp_path / "b.mp4")  # made, but the stop came before any with block took it
    w.write(moving_frames(2))
    assert [p.name for p in tmp_path.iterdir()] == [w._tmp.name] and listed() == [w._tmp]
    assert w._tmp in video.remove_unfinished()  # what the command line does when stopped
    assert list(tmp_path.iterdir()) == [] and not listed()
    w.abort()
    out = write_video(tmp_path / "c.mp4", moving_frames(2))  # finished writers are not listed
    assert not listed() and [p.name for p in tmp_path.iterdir()] == ["c.mp4"] and out.is_file()


def test_the_audio_track_is_aligned_to_the_first_picture(tmp_path):
    import subprocess

    import soundfile as sf

    from talker.video import read_audio_track

    beep = np.zeros(32000, np.float32)
    beep[:8000] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    sf.write(tmp_path / "beep.wav", beep, 16000)
    late = tmp_path / "late.mp4"  # the picture from 0 s, the sound from 0.5 s
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=3",
                    "-itsoffset", "0.5", "-i", str(tmp_path / "beep.wav"), "-c:v", "libx264", "-c:a", "aac",
                    "-shortest", str(late)], check=True)
    wave = read_audio_track(late)
    onset = np.argmax(np.abs(wave) > 0.05) / 16000
    assert abs(onset - 0.5) < 0.01 and np.abs(wave[:7500]).max() < 0.01  # silence until the sound starts
    assert read_audio_track(tmp_path / "beep.wav").shape == (32000,)  # no picture: the sound as stored
