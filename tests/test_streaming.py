"""Long audio and streaming: windowed speech2latent, ``pipe.stream``, incremental video writing."""

import numpy as np
import pytest
import torch
from conftest import RES, randomize_zero_init, speech_like, tiny_pipeline

from talker.errors import AudioError, InputError
from talker.pipelines.dae_talker.windows import CrossFader, runnable_windows, window_weights
from talker.video import read_video

STEPS = 2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [1, 60, 100, 101, 175, 176, 400, 1234])
def test_windows_cover_every_frame_with_weights_summing_to_one(n):
    window, overlap = 100, 25
    windows = runnable_windows(0, n, True, window, overlap)  # all the audio at once, as __call__ has it
    total = torch.zeros(n)
    for i, (s, e, last) in enumerate(windows):
        assert e == min(s + window, n) and last == (i == len(windows) - 1)
        total[s:e] += window_weights(s, e, overlap, first=i == 0, last=last)
    assert torch.allclose(total, torch.ones(n))
    assert windows[-1][1] == n and (len(windows) == 1 or windows[-2][1] < n)


@pytest.mark.parametrize("n, chunk", [(1, 1), (176, 7), (175, 25), (400, 100), (1234, 33)])
def test_a_stream_runs_each_window_once_its_audio_is_in(n, chunk):
    """Audio arriving ``chunk`` frames at a time: a window runs only on frames already heard, and
    the windows run are the offline ones (the last may run before the end is known, shorter)."""
    window, overlap, hop = 100, 25, 75
    start, heard, ran = 0, 0, []
    while heard < n:
        heard = min(n, heard + chunk)
        for s, e, last in runnable_windows(start, heard, heard == n, window, overlap):
            assert e <= heard and (e - s == window or heard == n)
            ran.append((s, e))
            start = s + hop
    offline = [(s, e) for s, e, _ in runnable_windows(0, n, True, window, overlap)]
    assert [s for s, _ in ran] == [s for s, _ in offline][: len(ran)]
    assert ran[-1][1] == n


def test_crossfader_blends_linearly_and_hands_out_final_frames_once():
    fader = CrossFader(overlap=4)
    fader.add(0, {"z": torch.zeros(10, 2)}, first=True, last=False)
    assert fader.pop(6)["z"].shape == (6, 2)  # frames 0..5 are final
    fader.add(6, {"z": torch.ones(10, 2)}, first=False, last=True)
    rest = fader.pop(16)["z"][:, 0]
    assert torch.allclose(rest[:4], torch.tensor([0.2, 0.4, 0.6, 0.8]))  # the cross-fade
    assert torch.equal(rest[4:], torch.ones(6))
    assert fader.pop(100)["z"].shape == (0, 2)


def test_long_audio_joins_windows_smoothly(pipe):
    """Across a window boundary latents change no more than inside a window."""
    audio = speech_like(12.0)
    out = pipe(audio, sampling_rate=16000, num_inference_steps=1, generator=gen(), window_frames=50, overlap_frames=10)
    assert out.latents.shape[0] == 300
    step = np.abs(np.diff(out.latents, axis=0)).mean(1)
    joins = [i for i in range(39, 300, 40)]  # where a window's weights reach their ramps
    assert step[joins].max() < 4 * np.median(step)


@pytest.mark.parametrize("chunk", [640, 1000, 16000 * 3])
def test_stream_gives_the_frames_of_a_whole_call(pipe, chunk):
    audio = speech_like(5.0)
    whole = pipe(audio, sampling_rate=16000, num_inference_steps=STEPS, generator=gen(4), window_frames=40,
                 overlap_frames=10, frame_batch_size=8)
    chunks = (audio[i : i + chunk] for i in range(0, len(audio), chunk))
    frames = list(pipe.stream(chunks, 16000, num_inference_steps=STEPS, generator=gen(4), window_frames=40,
                              overlap_frames=10, frame_batch_size=8))
    assert len(frames) == 125 and frames[0].shape == (RES, RES, 3) and frames[0].dtype == np.uint8
    assert np.abs(np.stack(frames).astype(int) - whole.frames.astype(int)).max() <= 1


def test_stream_emits_frames_before_the_audio_ends(pipe):
    """Bounded look-ahead: the first frames come out while most of the audio is still to come."""
    audio = speech_like(8.0)
    pulled = []

    def chunks():
        for i in range(0, len(audio), 1600):
            pulled.append(i + 1600)
            yield audio[i : i + 1600]

    it = pipe.stream(chunks(), 16000, num_inference_steps=STEPS, generator=gen(), window_frames=25, overlap_frames=5,
                     frame_batch_size=4)
    first = next(it)
    assert first.shape == (RES, RES, 3)
    assert pulled[-1] <= 16000 * 1.2  # 25 frames of audio (1 s) plus one chunk, not the whole 8 s
    assert 1 + sum(1 for _ in it) == 200


def test_stream_resamples_other_rates_and_rejects_bad_chunks(pipe):
    audio = speech_like(2.0, rate=44100)
    frames = list(pipe.stream(np.array_split(audio, 7), 44100, num_inference_steps=1, generator=gen()))
    assert len(frames) == 50
    with pytest.raises(AudioError, match="empty"):
        list(pipe.stream(iter([]), 16000, num_inference_steps=1))
    with pytest.raises(AudioError, match="NaN"):
        list(pipe.stream([np.full(1600, np.nan, np.float32)], 16000, num_inference_steps=1))
    with pytest.raises(AudioError, match="numpy arrays"):
        list(pipe.stream(["speech.wav"], 16000, num_inference_steps=1))
    with pytest.raises(AudioError, match="sampling_rate"):
        list(pipe.stream([audio], 7, num_inference_steps=1))
    with pytest.raises(AudioError, match="longer than the 1 s"):
        list(pipe.stream([audio], 44100, num_inference_steps=1, max_duration=1.0))
    with pytest.raises(InputError, match="overlap_frames"):
        list(pipe.stream([audio], 44100, window_frames=20, overlap_frames=15))
    with pytest.raises(TypeError, match=r"stream\(\) got an unexpected keyword argument 'num_steps'"):
        list(pipe.stream([audio], 44100, num_steps=2))
    with pytest.raises(TypeError, match=r"live_session\(\) got an unexpected keyword argument 'seed'"):
        pipe.live_session(44100, seed=2)


def test_generate_video_writes_frames_as_they_are_decoded(pipe, tmp_path, monkeypatch):
    """The mp4 is written batch by batch (never a whole-video array) and equals the frames of a call."""
    import talker.video as video

    sizes = []
    real_write = video.VideoWriter.write

    def spy(self, frames):
        sizes.append(len(frames))
        return real_write(self, frames)

    monkeypatch.setattr(video.VideoWriter, "write", spy)
    audio = speech_like(3.0)
    out = pipe.generate_video(audio, tmp_path / "a.mp4", sampling_rate=16000, num_inference_steps=STEPS,
                              generator=gen(2), frame_batch_size=10, crf=0, watermark=False)
    assert out.frames == 75 and out.latents.shape[0] == 75
    assert max(sizes) <= 10 and sum(sizes) == 75
    back = read_video(tmp_path / "a.mp4")
    ref = pipe(audio, sampling_rate=16000, num_inference_steps=STEPS, generator=gen(2)).frames
    assert back.frames.shape == ref.shape
    # the tiny random decoder's pixel noise does not survive yuv420p chroma subsampling: compare
    # each frame's mean brightness
    assert np.abs(back.frames.mean(axis=(1, 2, 3)) - ref.mean(axis=(1, 2, 3))).max() < 6
    with pytest.raises(InputError, match="output_type"):
        pipe.generate_video(audio, tmp_path / "b.mp4", sampling_rate=16000, output_type="pil")
    with pytest.raises(TypeError, match=r"generate_video\(\) got an unexpected keyword argument 'num_steps'"):
        pipe.generate_video(audio, tmp_path / "b.mp4", sampling_rate=16000, num_steps=2)
    with pytest.raises(AudioError):
        pipe.generate_video(np.zeros(0), tmp_path / "c.mp4", sampling_rate=16000)
    assert not (tmp_path / "c.mp4").exists() and not (tmp_path / "b.mp4").exists()


def streaming_pipeline(chunk_frames=3):
    """The tiny pipeline with a streaming speech2latent (the same weights, chunked)."""
    from talker import Speech2Latent

    pipe = tiny_pipeline()
    config = {k: v for k, v in pipe.speech_to_latent.config.items() if not k.startswith("_")}
    s2l = Speech2Latent(**{**config, "chunk_frames": chunk_frames})
    s2l.load_state_dict(pipe.speech_to_latent.state_dict())
    pipe.register_modules(speech_to_latent=s2l.eval())
    return pipe


def test_live_emits_each_frame_once_its_chunk_of_audio_is_in():
    pipe = streaming_pipeline(3)
    audio = speech_like(2.0)
    pulled = []  # samples handed over when each frame came out

    def microphone():
        for i in range(0, len(audio), 320):  # 20-ms blocks
            pulled.append(min(i + 320, len(audio)))
            yield audio[i : i + 320]

    frames, out_at = [], []
    for frame in pipe.stream(microphone(), 16000, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                             live=True):
        frames.append(frame)
        out_at.append(pulled[-1])
    assert len(frames) == 50
    # frame k needs the audio to the end of its chunk of 3 frames (640 samples each), and no more
    # than the 20-ms block that completes it
    need = [min((k // 3 + 1) * 3, 50) * 640 for k in range(50)]
    assert all(n <= got < n + 320 or got == len(audio) for n, got in zip(need, out_at, strict=True)), (need, out_at)
    # where its audio context covers the whole input, it makes the offline frames up to the
    # chunk edges of the features
    offline = pipe(audio, sampling_rate=16000, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert np.abs(offline.astype(int) - np.stack(frames).astype(int)).mean() < 0.5


def test_live_needs_a_streaming_speech2latent(pipe):
    with pytest.raises(InputError, match="--chunk-frames"):
        next(pipe.stream([speech_like(1.0)], 16000, live=True))
    with pytest.raises(InputError, match="live must be True or False"):
        next(pipe.stream([speech_like(1.0)], 16000, live="yes"))


def test_a_newest_only_session_shows_the_newest_frame_of_each_push_and_skips_the_rest():
    """A display's session: each push of 0.3 s gives one frame, the newest whose audio is all in,
    the same frame a full live run makes there; the frames in between are skipped, not owed."""
    pipe = streaming_pipeline(3)
    audio = speech_like(2.0)
    full = dict(live_frames(pipe, [audio]))
    session = pipe.live_session(16000, num_inference_steps=2, generator=gen(), newest_only=True)
    shown = []
    for start in range(0, len(audio), 4800):  # 0.3-s pushes: 7.5 frames each
        out = session.push(audio[start : start + 4800])
        heard = min(start + 4800, len(audio)) // 640
        assert [i for i, _ in out] == ([heard // 3 * 3 - 1] if heard >= 3 else [])
        shown += out
    shown += session.end()
    assert shown[-1][0] == 49 and session.skipped == 50 - len(shown)
    for i, frame in shown:
        assert np.abs(frame.astype(int) - full[i].astype(int)).max() <= 1, i
    with pytest.raises(InputError, match="ended"):
        session.push(audio[:640])


def live_frames(pipe, chunks, **kwargs):
    session = pipe.live_session(16000, num_inference_steps=2, generator=gen(), **kwargs)
    out = [pair for chunk in chunks for pair in session.push(chunk)]
    return out + session.end()


def test_a_live_session_computes_each_chunk_once_and_keeps_only_its_memory():
    """Pushed 20-ms blocks or the whole audio at once, a session makes the same frames: each
    chunk's features and network step are computed once, from the audio up to the chunk's end.
    It keeps the audio of one frame before the next chunk and the network's last
    ``window_frames`` frames, however long the stream."""
    pipe = streaming_pipeline(3)
    audio = speech_like(2.0)
    session = pipe.live_session(16000, num_inference_steps=2, generator=gen(), window_frames=6)
    blocks = [pair for i in range(0, len(audio), 320) for pair in session.push(audio[i : i + 320])]
    assert len(session.audio.wave) < 5 * 640
    assert all(b.keys.shape[2] == 6 for b in session.stream.blocks)
    blocks += session.end()
    whole = dict(live_frames(pipe, [audio], window_frames=6))
    assert [i for i, _ in blocks] == list(range(50)) and sorted(whole) == list(range(50))
    for i, frame in blocks:
        assert np.abs(frame.astype(int) - whole[i].astype(int)).max() <= 1, i
    assert np.abs(blocks[30][1].astype(int) - blocks[49][1].astype(int)).max() > 0


@pytest.mark.parametrize("voice_activity", [False, True])
def test_live_features_of_a_chunk_are_those_of_all_the_audio_so_far(voice_activity):
    """A chunk's features, read from its audio after one frame of the past (and the voice activity
    carried on), are the rows the front end gives on all the audio up to the chunk's end."""
    from talker import Speech2Latent
    from talker.frontends import speech_features
    from talker.pipelines.dae_talker.incoming import FrameAudio
    from talker.pipelines.dae_talker.live import LiveFeatures

    pipe = streaming_pipeline(3)
    s2l = Speech2Latent(chunk_frames=3, voice_activity=voice_activity, hidden_size=32, num_heads=2, ffn_size=64).eval()
    audio = speech_like(1.0)
    heard = FrameAudio(25)
    heard.extend(audio, None)
    features = LiveFeatures(pipe, s2l, 6)
    for first, end in ((0, 3), (3, 6), (6, 9), (9, 11)):
        want = speech_features(audio[: end * 640], end, s2l.config)[4 * first :]
        assert torch.allclose(features(heard, first, end)[0], want, atol=1e-5), (first, end)


def test_a_live_stream_hears_the_live_context_unless_told_otherwise():
    """stream(live=True) hears LIVE_CONTEXT_FRAMES of audio by default, and a window it is given
    (checked: 0 is refused, not replaced)."""
    from talker.defaults import LIVE_CONTEXT_FRAMES

    pipe = streaming_pipeline(3)
    audio = speech_like(2.4)  # 60 frames: more than the 48-frame context
    blocks = [audio[i : i + 640] for i in range(0, len(audio), 640)]
    streamed = np.stack(list(pipe.stream(blocks, 16000, live=True, num_inference_steps=2, generator=gen())))
    told = np.stack([f for _, f in live_frames(pipe, blocks, window_frames=LIVE_CONTEXT_FRAMES)])
    longer = np.stack([f for _, f in live_frames(pipe, blocks, window_frames=99)])
    assert np.array_equal(streamed, told)
    assert np.abs(longer[-1].astype(int) - told[-1].astype(int)).max() > 0  # the last frames hear less history
    with pytest.raises(InputError, match="window_frames must be at least 2"):
        next(pipe.stream(blocks, 16000, live=True, window_frames=0))


def test_live_input_renders_with_the_light_decoder_where_the_speaker_has_one():
    """A speaker with a light decoder: live sessions render with it unless told otherwise, and
    their frames are its frames; offline generation keeps the distilled decoder."""
    from talker import DAEDecoderUNet
    from talker.training.distill import new_student

    pipe = streaming_pipeline(3)
    distilled = DAEDecoderUNet.from_config(pipe.unet.config, prediction_type="sample").eval()
    torch.manual_seed(1)
    light = new_student(distilled, 4)
    for p in light.parameters():  # (its output layer starts at zero: frames would not differ)
        p.data.normal_(0, 0.2)
    pipe.register_modules(distilled_unet=distilled)
    audio = speech_like(1.0)
    without = np.stack([f for _, f in live_frames(pipe, [audio])])
    pipe.register_modules(light_unet=light.eval())
    assert pipe.default_decoder == "distilled" and pipe.live_decoder == "light"
    assert light.config.base_channels == 4 and light.config.norm_groups == 4  # gcd(4, the teacher's 4)
    live = np.stack([f for _, f in live_frames(pipe, [audio])])
    told = np.stack([f for _, f in live_frames(pipe, [audio], decoder="light")])
    distilled_live = np.stack([f for _, f in live_frames(pipe, [audio], decoder="distilled")])
    assert np.array_equal(live, told) and np.array_equal(distilled_live, without)
    assert np.abs(live.astype(int) - without.astype(int)).max() > 10
    assert pipe.settings(num_inference_steps=1).unet is distilled  # offline: the distilled decoder
    assert pipe.settings(decoder="light").unet is light
    pipe.register_modules(light_unet=None)
    with pytest.raises(InputError, match="no light decoder"):
        pipe.settings(decoder="light")


def test_live_input_is_refined_by_the_live_refiner_where_the_speaker_has_one():
    """A speaker with a live refiner: live sessions that render every frame on a CPU refine with
    it (refine=False still gives the decoder's own frames); one frame a push (newest_only) and
    offline generation keep the refiner."""
    from talker.models import Refiner

    pipe = graphed_test_pipeline("cpu")
    live_refiner = randomize_zero_init(Refiner(in_resolution=RES, scale=2, channels=4, num_blocks=1, up_channels=4), 4)
    audio = speech_like(1.0)
    full = np.stack([f for _, f in live_frames(pipe, [audio])])
    decoder_only = np.stack([f for _, f in live_frames(pipe, [audio], refine=False)])
    pipe.register_modules(live_refiner=live_refiner.eval())
    session = pipe.live_session(16000, num_inference_steps=STEPS, generator=gen())
    assert session.settings.refiner is live_refiner and pipe.settings().refiner is None
    assert pipe.live_session(16000, newest_only=True).settings.refiner is None
    live = np.stack([f for _, f in live_frames(pipe, [audio])])
    assert live.shape == full.shape == (25, 2 * RES, 2 * RES, 3)
    assert np.abs(live.astype(int) - full.astype(int)).max() > 10  # not the refiner's frames
    assert np.array_equal(np.stack([f for _, f in live_frames(pipe, [audio], refine=False)]), decoder_only)
    refiner = pipe.refiner  # the frames of a speaker whose refiner is the live one
    pipe.register_modules(refiner=live_refiner, live_refiner=None)
    assert np.array_equal(np.stack([f for _, f in live_frames(pipe, [audio])]), live)
    pipe.register_modules(refiner=refiner)
    assert np.array_equal(np.stack([f for _, f in live_frames(pipe, [audio])]), full)


def test_final_latents_are_handed_out_as_copies_of_their_own():
    """A batch of final latents holds only its own frames: generate_video keeps every batch's, and
    views into all the latents waiting at the time grew memory with the square of the length."""
    from talker.pipelines.dae_talker.generation import Ready

    ready = Ready(batch=10)
    ready.add({"z_sem": torch.randn(100, 8), "pose": torch.randn(100, 3)})
    z, p = ready.take(10)
    assert z.shape == (10, 8) and p.shape == (10, 3) and ready.count == 90
    assert z.untyped_storage().nbytes() == z.numel() * z.element_size()
    assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
    rest, _ = ready.take(200)
    assert rest.shape == (90, 8) and ready.count == 0


def test_each_decoded_batch_hands_free_heap_back(pipe, tmp_path, monkeypatch):
    """glibc keeps the holes the convolutions leave in its heap unless told: generation trims it
    after every batch (a 3-minute video held 2.5 GB without), and the trim is found on this Linux."""
    import talker.pipelines.dae_talker.generation as generation

    assert generation._malloc_trim() is not None  # glibc
    calls = []
    monkeypatch.setattr(generation, "release_free_heap", lambda: calls.append(1))
    out = pipe.generate_video(speech_like(2.0), tmp_path / "a.mp4", sampling_rate=16000, num_inference_steps=STEPS,
                              generator=gen(0), frame_batch_size=10, watermark=False)
    assert out.frames == 50 and len(calls) == 5
    # a live session decodes a chunk every 120 ms: the heap is trimmed at most once a second
    trims = []
    monkeypatch.undo()
    monkeypatch.setattr(generation, "_malloc_trim", lambda: trims.append)
    monkeypatch.setattr(generation, "_last_trim", float("-inf"))
    for _ in range(5):
        generation.release_free_heap()
    assert trims == [0]
    monkeypatch.setattr(generation, "_last_trim", generation._last_trim - generation.TRIM_INTERVAL_S)
    generation.release_free_heap()
    assert trims == [0, 0]


def graphed_test_pipeline(device):
    from talker.models import Refiner

    pipe = streaming_pipeline(3)
    refiner = randomize_zero_init(Refiner(in_resolution=RES, scale=2, channels=8, num_blocks=1, up_channels=8), 3)
    pipe.register_modules(refiner=refiner.eval())
    return pipe.to(device)


def test_cuda_graph_calls_run_the_network_as_it_is_off_a_gpu():
    """Off a GPU (and under autograd) a graphed call is the function itself; a graphed decoder
    answers ``ddim_decode`` like the UNet; live sessions on a CPU keep the speaker's own decoder."""
    from talker.pipelines.cuda_graphs import GraphedCall, GraphedDecoder
    from talker.pipelines.ddim import ddim_decode

    pipe = graphed_test_pipeline("cpu")
    call = GraphedCall(lambda x: x * 2)
    assert torch.equal(call(torch.ones(3)), torch.full((3,), 2.0)) and call.graphs == 0 and call.failed is None
    z, x_T = torch.randn(3, pipe.unet.config.z_dim, generator=gen()), torch.randn(1, 3, RES, RES, generator=gen())
    with torch.inference_mode():
        plain = ddim_decode(pipe.unet, pipe.scheduler, z, x_T, 2, 3)
        graphed = ddim_decode(GraphedDecoder(pipe.unet), pipe.scheduler, z, x_T, 2, 3)
        assert torch.equal(pipe.refine_frames(plain, GraphedCall(pipe.refiner)), pipe.refine_frames(plain))
    assert torch.equal(plain, graphed)
    session = pipe.live_session(16000, num_inference_steps=1, generator=gen())
    assert session.settings.unet is pipe.unet and session.settings.refiner is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_a_live_session_on_a_gpu_replays_cuda_graphs_and_makes_the_same_frames():
    pipe = graphed_test_pipeline("cuda")
    audio = speech_like(2.0)
    pipe.live_cuda_graphs = False
    plain = live_frames(pipe, [audio[i : i + 1920] for i in range(0, len(audio), 1920)], refine=True)
    pipe.live_cuda_graphs = True
    session = pipe.live_session(16000, num_inference_steps=2, generator=gen(), refine=True)
    assert session.settings.unet.call.graphs == 1 and session.settings.refiner.graphs == 1  # recorded at the start
    graphed = [pair for i in range(0, len(audio), 1920) for pair in session.push(audio[i : i + 1920])] + session.end()
    assert session.settings.unet.call.failed is None and session.settings.refiner.failed is None
    assert [i for i, _ in graphed] == [i for i, _ in plain] == list(range(50))
    assert graphed[0][1].shape == (2 * RES, 2 * RES, 3)
    for (_, a), (_, b) in zip(plain, graphed, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
