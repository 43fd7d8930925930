"""Video out and in: frames + audio ↔ mp4 (H.264 yuv420p + AAC), through PyAV's bundled FFmpeg.

``VideoWriter`` takes frames as they are made (constant memory) and interleaves the audio with
them; the file appears at its path only once it is complete (written to a hidden ``.part`` file
next to it, then renamed), so a failed or interrupted run never leaves a half-written video at the
path. A process killed outright (SIGKILL) cannot remove its ``.part`` file; the next writer in that
folder does, once the process that wrote it is gone.
"""

from __future__ import annotations

import os
import re
import secrets
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .audio import SAMPLE_RATE, decode_audio_file, resample, to_mono
from .errors import AudioError, VideoError

VIDEO_SUFFIXES = (".mp4", ".ts")  # what VideoWriter writes: mp4 files, MPEG-TS stream segments
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[^.]+\.part\.(mp4|ts)$")
#: this process's writers' hidden files, from just before each exists until it is renamed or removed
_UNFINISHED: set[Path] = set()


def check_output_path(path, suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> Path:
    """Check that a video can be written at ``path`` before any work is done: a name ending in
    one of ``suffixes``, not a folder, and a parent that is (or can become) a writable folder.
    Raises :class:`VideoError` saying what is wrong and what is accepted."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise VideoError(f"{path}: videos are written as {' or '.join(suffixes)} files; "
                         f"give a path ending in {suffixes[0]}")
    if path.is_dir():
        raise VideoError(f"{path} is a folder; give the video's file path (e.g. {path / ('video' + suffixes[0])})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # the first part of the path that exists
        parent = parent.parent
    if not parent.is_dir():
        raise VideoError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VideoError(f"cannot write {path}: the folder {parent} is not writable")
    return path


def remove_unfinished() -> list[Path]:
    """Remove the hidden ``.part`` files of this process's writers that are not finished (what a
    stopped command line leaves if the stop came between a writer making its file and the
    ``with`` block that would drop it). Returns what was removed."""
    removed = []
    for path in list(_UNFINISHED):
        _UNFINISHED.discard(path)
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(path)
    return removed


def remove_stale_parts(folder) -> list[Path]:
    """Remove the hidden ``.part`` files that killed writers left in ``folder`` (those whose
    process no longer runs). Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _PART.match(entry.name)
        if m is None or _process_alive(int(m["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def _prepare_audio(audio: Any, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    """Path or array → ((channels, T) float32, rate) ready for the AAC encoder (≤ 2 channels)."""
    if isinstance(audio, (str, os.PathLike)):
        samples, rate = decode_audio_file(audio)  # (T, C)
    else:
        if sampling_rate is None:
            raise AudioError("sampling_rate is required when audio is given as an array")
        samples = np.asarray(audio.cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32)
        rate = int(sampling_rate)
        if samples.ndim == 2 and samples.shape[0] <= 8 and samples.shape[1] > samples.shape[0]:
            samples = samples.T
    if samples.ndim == 2 and samples.shape[1] > 2:
        samples = to_mono(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    if not np.isfinite(samples).all():
        raise AudioError("audio contains NaN or infinite samples")
    if rate not in AAC_RATES:
        samples, rate = resample(samples, rate, 48000), 48000
    return np.ascontiguousarray(np.clip(samples, -1, 1).T, dtype=np.float32), rate


class VideoWriter:
    """Incremental mp4 writer: ``with VideoWriter(path, fps, audio=...) as w: w.write(frames)``.
    A ``.ts`` path writes an MPEG-TS segment instead (for streaming players).

    Args:
        path: output .mp4.
        fps: frames per second.
        audio: optional path or samples muxed as AAC; cut to the video's length on close.
        sampling_rate: Hz of an array ``audio``.
        crf: x264 quality (0 = lossless, 18 ≈ visually lossless, 23 = default).
        metadata: container tags (e.g. {"comment": "..."}).
        codec, pix_fmt: "libx264"/"yuv420p" plays everywhere; "libx264rgb"/"rgb24" with crf 0
            stores frames exactly (datasets).
        output_size: resize frames to this square side (bicubic) before writing.
        watermark: a :class:`talker.watermark.Payload` embedded in every frame (after resizing).
    """

    def __init__(self, path, fps: int = 25, audio: Any = None, sampling_rate: int | None = None,
                 crf: int = 18, metadata: dict[str, str] | None = None, codec: str = "libx264",
                 pix_fmt: str = "yuv420p", output_size: int | None = None, watermark: Any = None):
        import av

        if output_size is not None and (isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 2):
            raise VideoError(f"output_size must be a frame side in pixels (at least 2); got {output_size!r}")
        self.output_size, self.watermark = output_size, watermark
        self.path = check_output_path(path)
        self.fps = int(fps)
        self._audio = None if audio is None else _prepare_audio(audio, sampling_rate)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_parts(self.path.parent)
        except OSError as e:
            raise VideoError(f"cannot write {self.path}: {e.strerror or e}") from None
        suffix = self.path.suffix.lower()
        # the hidden file's name is known (and listed as this process's unfinished file) before it
        # exists, so that a stop (SIGTERM, Ctrl-C) at any moment from here on removes it
        self._tmp = self.path.parent / f".{self.path.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}"
        _UNFINISHED.add(self._tmp)
        try:
            # an ordinary file's permissions (the umask applies), as the finished video keeps
            os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            # .mp4 (moov atom first, so browsers start playing at once) or .ts (MPEG-TS segments
            # for streaming players)
            options = {} if suffix == ".ts" else {"movflags": "+faststart"}
            self._container = av.open(str(self._tmp), mode="w", options=options)
            for key, value in (metadata or {}).items():
                self._container.metadata[key] = value
        except FileExistsError:  # another writer's file of the same name: not ours to remove
            _UNFINISHED.discard(self._tmp)
            raise VideoError(f"cannot write {self.path}: {self._tmp.name} already exists") from None
        except BaseException as e:
            self._tmp.unlink(missing_ok=True)
            _UNFINISHED.discard(self._tmp)
            if isinstance(e, OSError):
                raise VideoError(f"cannot write {self.path}: {e.strerror or e}") from None
            raise
        self._video = None
        self._audio_stream = None
        self._audio_done = 0
        self.frames_written = 0
        self._closed = False
        self._crf = crf
        self._codec, self._pix_fmt = codec, pix_fmt

    def _open_streams(self, height: int, width: int) -> None:
        self._video = self._container.add_stream(self._codec, rate=Fraction(self.fps))
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = self._pix_fmt
        self._video.options = {"crf": str(self._crf), "preset": "medium"}
        if self._audio is not None:
            samples, rate = self._audio
            self._audio_stream = self._container.add_stream("aac", rate=rate)
            self._audio_stream.layout = "mono" if samples.shape[0] == 1 else "stereo"
            self._audio_stream.bit_rate = 128_000

    def _write_audio_until(self, seconds: float | None) -> None:
        import av

        samples, rate = self._audio
        end = samples.shape[1] if seconds is None else min(samples.shape[1], int(round(seconds * rate)))
        chunk = 1024
        while self._audio_done < end:
            stop = min(self._audio_done + chunk, end)
            if stop - self._audio_done < chunk and seconds is not None:
                break  # wait for more video before writing a partial chunk
            piece = samples[:, self._audio_done : stop]
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=self._audio_stream.layout.name)
            frame.sample_rate = rate
            frame.pts = self._audio_done
            frame.time_base = Fraction(1, rate)
            self._container.mux(self._audio_stream.encode(frame))
            self._audio_done = stop

    def write(self, frames: np.ndarray) -> None:
        """Append frames: (H, W, 3) or (N, H, W, 3) uint8 RGB. Odd sides are edge-padded to even."""
        import av

        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VideoError(f"frames must be uint8 RGB (N, H, W, 3); got {frames.dtype} {frames.shape}")
        frames = mark_frames(frames, self.output_size, self.watermark)
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:  # yuv420p needs even sides
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._video is None:
            self._open_streams(frames.shape[1], frames.shape[2])
        elif (frames.shape[1], frames.shape[2]) != (self._video.height, self._video.width):
            raise VideoError("all frames of a video must have the same size")
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = self.frames_written
            vf.time_base = Fraction(1, self.fps)
            self._container.mux(self._video.encode(vf))
            self.frames_written += 1
        if self._audio_stream is not None:
            self._write_audio_until(self.frames_written / self.fps)

    def close(self) -> Path:
        """Flush the encoders and move the finished file to ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self._video is None:
                raise VideoError("no frames were written")
            self._container.mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._write_audio_until(None)
                self._audio_done = min(self._audio_done, self._audio[0].shape[1])
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
        except BaseException:
            self.abort()
            raise
        try:
            os.replace(self._tmp, self.path)
        except OSError as e:  # e.g. a folder was made at the path meanwhile
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"cannot write {self.path}: {e.strerror or e}") from None
        finally:
            _UNFINISHED.discard(self._tmp)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        self._tmp.unlink(missing_ok=True)
        _UNFINISHED.discard(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def mark_frames(frames: np.ndarray, output_size: int | None = None, watermark=None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames as a video carries them: resized to ``output_size`` (bicubic),
    then the :class:`talker.watermark.Payload` ``watermark`` embedded (None: either left out)."""
    if output_size is not None and frames.shape[1:3] != (output_size, output_size):
        frames = resize_frames(frames, output_size)
    if watermark is not None:
        from .watermark import embed

        frames = embed(frames, watermark)
    return frames


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, size, size, 3) uint8, bicubic (antialiased when shrinking)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                                        antialias=size < frames.shape[1])
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_video(path, frames, audio: Any = None, fps: int = 25, sampling_rate: int | None = None,
                crf: int = 18, metadata: dict[str, str] | None = None) -> Path:
    """Write frames (N, H, W, 3) uint8 and optional audio (path, or samples with
    ``sampling_rate``; default 16 kHz for arrays) to an H.264 + AAC mp4. Returns the path."""
    if audio is not None and not isinstance(audio, (str, os.PathLike)) and sampling_rate is None:
        sampling_rate = SAMPLE_RATE
    with VideoWriter(path, fps, audio, sampling_rate, crf=crf, metadata=metadata) as writer:
        writer.write(frames)
    return Path(path)


class VideoInfo(NamedTuple):
    """What a video file holds: frame count, frame rate, frame size and whether it has sound."""

    frames: int
    fps: float
    width: int
    height: int
    has_audio: bool


def probe_video(path) -> VideoInfo:
    """Read a video's frame count, rate and size from the file itself (frames are counted by
    demuxing, not trusted from the header)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: the file has no video stream")
            v = c.streams.video[0]
            width, height = v.codec_context.width, v.codec_context.height
            fps = float(v.average_rate or v.guessed_rate or 0)
            has_audio = bool(c.streams.audio)
            frames = sum(1 for packet in c.demux(v) if packet.size)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None
    return VideoInfo(frames, fps, width, height, has_audio)


class VideoData(NamedTuple):
    """frames: (N, H, W, 3) uint8 at ``fps``; audio: (T,) float32 at 16 kHz mono, or None."""

    frames: np.ndarray
    audio: np.ndarray | None
    fps: int


def iter_frames(path, fps: int = 25):
    """Decode a video one RGB frame (H, W, 3) uint8 at a time, as players show it: resampled to
    ``fps`` by taking the source frame nearest in time (any source rate, constant or variable),
    and turned by the file's rotation (phones store portrait video as landscape frames plus a
    display rotation). Frame 0 is the first video frame; constant memory at any size."""
    import av

    path = str(path)
    if not os.path.isfile(path):
        raise VideoError(f"video file not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame threads: 1080p/4K HEVC decodes several times faster
            prev, prev_t, start, k, step = None, None, None, 0, None
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else (0.0 if prev_t is None else prev_t + 1.0 / fps)
                start = t if start is None else start
                t -= start
                if prev is not None:
                    step = t - prev_t
                    while k / fps < (prev_t + t) / 2:  # targets nearer to the previous frame
                        yield prev
                        k += 1
                prev, prev_t = _displayed(frame), t
            if prev is None:
                raise VideoError(f"{path}: the video has no frames")
            end = prev_t + (step if step else 1.0 / fps)
            while k < max(1, int(np.floor(end * fps + 0.5))):
                yield prev
                k += 1
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None


def _displayed(frame) -> np.ndarray:
    """A decoded frame as RGB, turned by its display rotation (multiples of 90°)."""
    image = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _first_frame_times(container, streams) -> dict[str, float]:
    """When the first frame of each of ``streams`` (one audio, at most one video) is presented,
    seconds on the container's clock, by kind ("audio", "video"); one pass over the file."""
    import av

    kinds = {s.type for s in streams}
    found: dict[str, float] = {}
    for frame in container.decode(*streams):
        kind = "audio" if isinstance(frame, av.AudioFrame) else "video"
        if frame.time is not None and kind not in found:
            found[kind] = float(frame.time)
            if found.keys() == kinds:
                break
    return found


def read_audio_track(path) -> np.ndarray | None:
    """The audio of a video as 16 kHz mono float32, aligned to its video: sample 0 sounds with
    the first video frame (sound recorded before the picture starts is cut, silence fills where
    the picture starts first). None if it has no audio; for a file without video, as stored."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            starts = _first_frame_times(container, [container.streams.audio[0], *container.streams.video[:1]])
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e})") from None
    audio_start, video_start = starts.get("audio"), starts.get("video")
    samples, rate = decode_audio_file(path)
    wave = resample(to_mono(samples), rate, SAMPLE_RATE) if samples.size else np.zeros(0, np.float32)
    if audio_start is None or video_start is None:
        return wave
    lead = int(round((video_start - audio_start) * SAMPLE_RATE))  # > 0: the sound starts first
    if lead > 0:
        return wave[lead:]
    return np.concatenate([np.zeros(-lead, np.float32), wave]) if lead < 0 else wave


def read_video(path, fps: int = 25) -> VideoData:
    """Decode a whole video: frames (N, H, W, 3) resampled to ``fps`` (nearest frame in time)
    and its audio as 16 kHz mono (None if it has no audio stream)."""
    frames = np.stack(list(iter_frames(path, fps)))
    return VideoData(frames, read_audio_track(path), fps)
