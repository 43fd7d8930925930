"""The benches: bench/speed.py runs end to end on a tiny speaker and writes its JSON and plot, and
bench/emotion_summary.py counts bench/emotion.py's figures against the bars, bench/emotion.py
carries points along an expression warp's flow to where it draws them, bench/emotion_geometry.py
holds the warp's move against the face's, bench/emotion_takes.py finds the flow scale and the
renderer's points it reads by, bench/emotion_supervision.py carries points by an optical flow, and bench/refiner.py's noise images are what they say;
the lips-closed share the lip figures count with."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_writes_its_figures(speaker_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sys.modules.pop("speed", None)
    import speed

    out = tmp_path / "speed.json"
    assert speed.main(["--model", str(speaker_dir), "--out", str(out), "--frames", "4", "--single-frames", "2",
                       "--seconds", "1.5", "--memory-seconds", "1,3", "--memory-steps", "1", "--steps", "2",
                       "--decoder-steps", "1,2,4"]) == 0
    results = json.loads(out.read_text())
    rows = results["decoder"]["by_steps"]
    assert set(rows) == {"1", "2", "4"}
    assert all(r["batched_fps"] > 0 and r["batched_fps_float32"] > 0 and r["frame_by_frame_fps"] > 0 for r in rows.values())
    assert results["decoder"]["paper_recipe"]["steps"] == 100 and results["speedup_vs_paper_recipe"] > 0
    e2e = results["end_to_end_10s"]
    assert e2e["frames"] == 37 and e2e["stream"]["first_frame_s"] <= e2e["stream"]["total_s"]
    assert results["memory"]["1s"]["peak_rss_mib"] > 0 and results["memory"]["ratio_longest_to_shortest"] > 0
    assert out.with_suffix(".png").is_file()

    # --only re-measures the named sections and keeps the others of the file
    before = json.loads(out.read_text())
    assert speed.main(["--model", str(speaker_dir), "--out", str(out), "--only", "memory",
                       "--memory-seconds", "1,2", "--memory-steps", "1", "--steps", "2"]) == 0
    after = json.loads(out.read_text())
    assert after["decoder"] == before["decoder"] and after["end_to_end_10s"] == before["end_to_end_10s"]
    assert set(after["memory"]) == {"steps", "1s", "2s", "ratio_longest_to_shortest"}
    m = after["memory"]["2s"]
    assert m["peak_rss_mib"] >= m["rss_before_mib"] > 0 and m["load_peak_rss_mib"] > 0


def test_app_soak_benchmark_serves_the_app_and_writes_its_figures(speaker_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import app_soak

    out = tmp_path / "soak.json"
    assert app_soak.main(["--model", str(speaker_dir), "--out", str(out), "--requests", "5", "--every", "2",
                          "--seconds", "0.5"]) == 0
    results = json.loads(out.read_text())
    assert results["answered"] == 5 and not results["failures"] and results["tracebacks_in_server_log"] == 0
    assert [r["requests"] for r in results["series"]] == [1, 2, 4, 5]
    assert results["server_rss_mib"]["max"] > 0 and results["gradio_cache_mib_max"] > 0
    assert results["work_folders_max"] <= 4  # the fifth request is not audio: its folder goes at once


def test_live_benchmark_paces_the_audio_and_writes_its_figures(tmp_path, monkeypatch):
    from conftest import tiny_pipeline

    from talker import Speech2Latent

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import live

    pipe = tiny_pipeline()
    config = {k: v for k, v in pipe.speech_to_latent.config.items() if not k.startswith("_")}
    pipe.register_modules(live_speech_to_latent=Speech2Latent(**{**config, "chunk_frames": 2}).eval())
    pipe.save_pretrained(tmp_path / "speaker")
    out = tmp_path / "live.json"
    assert live.main(["--model", str(tmp_path / "speaker"), "--out", str(out), "--seconds", "2", "--steps", "1",
                      "--sizes", "decoder"]) == 0
    results = json.loads(out.read_text())
    row = results["settings"][f"{pipe.resolution}px_ddim_1step"]  # its live decoder: the only one it has
    assert row["decoder"] == "ddim"
    assert results["chunk_frames"] == 2 and results["lookahead_ms"] == 40 and row["frames"] == 50
    # paced like a microphone: 2 s of audio take about 2 s, and no frame comes before its audio
    assert 1.9 <= row["wall_s"] and row["latency_ms"]["median"] > 0 and 0 < row["real_time_factor"] < row["wall_s"] / 2
    # as a display shows it: one picture per push at most, every frame shown or skipped, none early
    display = row["display"]
    assert 0 < display["pictures"] <= 21 and display["pictures"] + display["frames_skipped"] == 50
    assert display["age_ms"]["median"] > 0
    costs = row["per_chunk_ms"]  # a chunk's stages, timed as a session computes them
    assert costs["frames"] == 2 and costs["speech2latent"] > 0 and costs["decoder"] > 0 and costs["refiner"] == 0
    stages = ("front_end_and_voice_activity", "speech2latent", "decoder", "refiner")
    assert abs(costs["total"] - sum(costs[k] for k in stages)) < 0.3


def test_timing_runs_reinitialise_what_they_name_and_say_so():
    import pytest
    import torch
    from conftest import tiny_pipeline

    from talker.evaluation.timing import reinitialise
    from talker.models import Refiner

    pipe = tiny_pipeline()
    pipe.register_modules(refiner=Refiner(in_resolution=pipe.resolution, scale=2, channels=8, num_blocks=1,
                                          up_channels=8))
    unet, encoder = pipe.unet, pipe.encoder
    assert reinitialise(pipe) == {} and pipe.unet is unet  # nothing named: nothing replaced
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    replaced = reinitialise(pipe, "unet", refiner_scale=4)
    assert replaced == {"random_weights": ["unet"], "untrained_refiner": {"scale": 4, "resolution": 4 * pipe.resolution}}
    assert pipe.unet is not unet and dict(pipe.unet.config) == dict(unet.config) and pipe.encoder is encoder
    assert any(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    assert pipe.output_resolution() == 4 * pipe.resolution and pipe.refiner.config.channels == 8
    with pytest.raises(SystemExit, match="no 'voice_gate' component"):
        reinitialise(pipe, "voice_gate")


def test_emotion_summary_counts_each_figure_against_its_bar(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion_summary", None)
    import emotion_summary

    def run(ratio, half, corr, closed, pause=None, truth=(0.45, 0.94, 1.0), at_pose=None, face=None):
        truth_half, truth_corr, truth_closed = truth  # the truth's own half ÷ full and lip-sync
        return {"clip": "c0", "features": ["lip_gap", "corner_lift"],
                "lipsync_neutral": {"mouth_corr": 0.9, "silent_closed": 1.0, "mouth_corr_truth_frames": 0.95,
                                    "silent_closed_truth_frames": 1.0},
                "settings": {"happy@0.5": {"counted": [True, True], "ratio": [0.5, 0.9]},
                             "happy@0.5+sad@0.5": {"counted": [False, True], "ratio": [None, 1.1]},
                             "happy@1": {"counted": [True, False], "ratio": [ratio, None],
                                         "half_over_full": [half, None], "truth_half_over_full": [truth_half, None],
                                         "lipsync": {"mouth_corr": corr, "silent_closed": closed,
                                                     "mouth_corr_truth_frames": truth_corr,
                                                     "silent_closed_truth_frames": truth_closed, **(pause or {})},
                                         **(at_pose or {}), **(face or {})}}}

    paths = []
    pause = {"pause_gap": 0.098, "closed_threshold": 0.0965, "pause_gap_warp_on_truth": 0.0875,
             "at_speaker_pose": {"silent_closed": 0.5, "silent_closed_neutral": 0.6}}
    posed = {"at_speaker_pose": {"silent_closed": 0.9, "silent_closed_neutral": 1.0}}  # 10 points fewer closed
    # clip 0 also against the truth at the speaker's own head poses, where it counts the corners too
    at_pose = {"ratio_at_speaker_pose": [1.05, 0.5], "counted_at_speaker_pose": [True, True],
               "truth_change": [0.02, 0.001], "truth_change_at_speaker_pose": [0.015, 0.03]}
    # what the face itself did (off the renderer's landmarks): on clip 0 it did not move the lip gap
    # (the probe read it as moved), on clip 1 it did, by half as much at 0.5
    face = [{"counted_by_face": [False, False], "truth_probe_over_geometry": [40.0, None],
             "truth_geometric_half_over_full": [0.5, None]},
            {"counted_by_face": [True, False], "truth_probe_over_geometry": [0.6, None],
             "truth_geometric_half_over_full": [0.5, None]}]
    for k, figures in enumerate([(0.95, 0.5, 0.88, 1.0, posed, (0.45, 0.94, 1.0), at_pose, face[0]),
                                 (1.3, 0.7, 0.85, 0.9, pause, (0.7, 0.9, 1.0), None, face[1])]):
        paths.append(tmp_path / f"clip{k}.json")
        paths[-1].write_text(json.dumps(run(*figures)))
    # clip 1 also holds the warp's own move of the lip gap against the face's: 90% of it at 1.0,
    # 0.35 of that at 0.5
    clip1 = json.loads(paths[1].read_text())
    clip1["settings"]["happy@1"] |= {"warp_geometric_change": [0.02, 0.0], "warp_geometric_ratio": [0.9, None],
                                     "warp_visible_ratio": [0.7, None]}
    clip1["settings"]["happy@0.5"]["warp_geometric_change"] = [0.007, 0.0]
    # and the lip-sync of the lips' own points as the warp carries them: one point fewer closed
    clip1["settings"]["happy@1"]["lipsync_by_geometry"] = {"mouth_corr": 0.9, "silent_closed": 0.98,
                                                         "mouth_corr_change": 0.0, "silent_closed_change": -0.02,
                                                         "gap_slope": 0.99}
    paths[1].write_text(json.dumps(clip1))
    out = tmp_path / "summary.json"
    assert emotion_summary.main([str(p) for p in paths] + ["--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["met"] == {"ratio": {"met": 1, "of": 2}, "half": {"met": 1, "of": 2}, "lipsync": {"met": 1, "of": 2},
                              "ratio_below_full": {"met": 2, "of": 4}, "ratio_mix": {"met": 2, "of": 2}}
    # each lower intensity and the mix against the truth at the same setting, feature by feature
    assert summary["emotions"]["happy"]["settings"]["happy@0.5"][1] == {
        "clip": "clip1.json", "lip_gap": {"ratio": 0.5, "ok": False}, "corner_lift": {"ratio": 0.9, "ok": True}}
    assert list(summary["emotions"]["happy+sad"]["settings"]["happy@0.5+sad@0.5"][0]) == ["clip", "corner_lift"]
    # the truth's own frames against the same bars: clip 1's half (0.7) and mouth correlation (0.05 under) fail
    # and the truth at the speaker's poses against itself at its own: 0.015 ÷ 0.02 is outside 0.8–1.2
    # (corner_lift: not counted at the truth's own poses)
    assert summary["truth_met"] == {"half": {"met": 1, "of": 2}, "lipsync": {"met": 1, "of": 2},
                                    "posed_over_own": {"met": 0, "of": 1}, "geometric_half": {"met": 2, "of": 2}}
    # the bars on the features the face itself moved: clip 1's lip gap alone, whose ratio and half fail
    assert summary["met_where_the_face_moves"] == {"ratio": {"met": 0, "of": 1}, "half": {"met": 0, "of": 1}}
    assert summary["met_by_geometry"] == {"ratio": {"met": 1, "of": 1}, "half": {"met": 0, "of": 1}}
    assert summary["met_by_visible_geometry"] == {"ratio": {"met": 0, "of": 1}}  # 70% of the move the frames show
    assert summary["emotions"]["happy"]["geometry"] == {
        "lip_gap": [{"clip": "clip1.json", "ratio": 0.9, "ok": True, "half_over_full": 0.35, "half_ok": False}]}
    # at the speaker's own pose clip 0's lips-closed fails too (0.9 against neutral's 1.0)
    assert summary["met_at_speaker_pose"] == {"ratio": {"met": 1, "of": 2}, "lipsync": {"met": 0, "of": 2}}
    assert summary["emotions"]["happy"]["features_at_speaker_pose"] == {
        "lip_gap": [{"clip": "clip0.json", "ratio": 1.05, "ok": True}],
        "corner_lift": [{"clip": "clip0.json", "ratio": 0.5, "ok": False}]}
    first = summary["emotions"]["happy"]["lipsync"][0]
    assert first["ok"] and not first["ok_at_speaker_pose"] and first["silent_closed_change_at_speaker_pose"] == -0.1
    rows = summary["emotions"]["happy"]["features"]
    assert list(rows) == ["lip_gap"]  # corner_lift: the truth did not move it
    assert [r["ratio_ok"] for r in rows["lip_gap"]] == [True, False] and rows["lip_gap"][0]["truth_half_over_full"] == 0.45
    assert [r["truth_half_ok"] for r in rows["lip_gap"]] == [True, False]
    assert [(r["by_face"], r["truth_probe_over_geometry"]) for r in rows["lip_gap"]] == [(False, 40.0), (True, 0.6)]
    assert summary["emotions"]["happy"]["lipsync"][1] == {"clip": "clip1.json", "mouth_corr_change": -0.05,
                                                          "silent_closed_change": -0.1, "ok": False,
                                                          "truth_mouth_corr_change": -0.05,
                                                          "truth_silent_closed_change": 0.0, "truth_ok": False,
                                                          "pause_gap_over_threshold": 0.0015,
                                                          "pause_gap_over_warp_on_truth": 0.0105,
                                                          "silent_closed_change_at_speaker_pose": -0.1,
                                                          "ok_at_speaker_pose": False,
                                                          "by_geometry": {"mouth_corr_change": 0.0,
                                                                          "silent_closed_change": -0.02,
                                                                          "gap_slope": 0.99, "ok": True}}
    assert summary["lipsync_met_by_geometry"] == {"met": 1, "of": 1}  # clip 0's file has no geometric lip-sync
    assert "pause_gap_over_threshold" not in summary["emotions"]["happy"]["lipsync"][0]  # older files: no pause gaps
    (tmp_path / "other.json").write_text(json.dumps({"decoder": {}}))
    with pytest.raises(SystemExit, match="not a bench/emotion.py result"):
        emotion_summary.main([str(tmp_path / "other.json"), "--out", str(out)])


def test_refiner_bench_decodes_from_the_inverted_noise_of_the_reference(monkeypatch):
    """bench/refiner.py --noise: "random" is the pipeline's own noise image; "inverted-reference"
    is the x_T from which the DDIM decoder renders the speaker's reference frame again."""
    import torch
    import torch.nn.functional as F
    from conftest import tiny_pipeline

    from talker.models import Refiner

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("refiner", None)
    import refiner as bench

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.register_modules(refiner=Refiner(in_resolution=pipe.resolution, scale=2, channels=8, num_blocks=1,
                                          up_channels=8))
    reference = torch.rand(3, 2 * pipe.resolution, 2 * pipe.resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pipe.refiner.set_reference(reference)
    random = bench.noise_image(pipe, "random", 0)
    assert torch.equal(random, pipe.prepare_fixed_noise(torch.Generator().manual_seed(0)))
    inverted = bench.noise_image(pipe, "inverted-reference", 0)
    assert inverted.shape == random.shape and not torch.allclose(inverted, random)

    # with a decoder that predicts no noise, DDIM inversion and decoding undo each other exactly:
    # the inverted noise renders the reference's downscale, a random one does not
    for p in pipe.unet.parameters():
        p.data.zero_()
    inverted = bench.noise_image(pipe, "inverted-reference", 0)
    ae = pipe.autoencoder_for("ddim")
    target = (F.avg_pool2d(reference[None], 2) + 1) / 2
    z = ae.encode(target)

    def error(x_T):
        out = ae.decode(z, x_T, bench.INVERSION_STEPS, output_type="pt")
        return (out.float() - target).abs().mean().item()

    assert error(inverted) < 0.01 < 0.1 < error(random)


def test_lips_closed_share_counts_the_masked_frames_and_an_unread_frame_as_open():
    from talker.evaluation.metrics import closed_share, lipsync_scores

    gap = np.array([0.01, 0.05, np.nan, 0.02, 0.2])
    assert closed_share(gap, 0.03) == pytest.approx(2 / 5)
    silent = np.array([True, True, True, False, False])
    assert closed_share(gap, 0.03, silent) == pytest.approx(1 / 3)
    assert np.isnan(closed_share(gap, 0.03, np.zeros(5, bool)))
    truth = {"mouth_open": np.array([0.0, 0.0, 0.0, 0.3, 0.5]), "speaking": ~silent}
    scores = lipsync_scores(gap, np.array([0.01, 0.03, 0.02, 0.1, 0.3]), truth, 5)
    assert scores["closed_threshold"] == pytest.approx(np.percentile([0.01, 0.03, 0.02], 95))
    assert scores["silent_closed"] == pytest.approx(1 / 3) and scores["silent_closed_truth_frames"] == pytest.approx(2 / 3)


def test_emotion_bench_follows_each_point_where_the_warp_draws_it(monkeypatch):
    """bench/emotion.py reads the expression warp's own move of the speaker's face by carrying the
    points the probe found along the warp's flow: a dot drawn at a point lands where that says."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion", None)
    import emotion
    from talker.models import ExpressionWarp

    torch.manual_seed(0)
    warp = ExpressionWarp(resolution=16, channels=8, field_scale=1)
    torch.nn.init.normal_(warp.head.weight, std=0.5)
    read = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4) * 2 - 1, size=16, mode="bicubic", align_corners=False)
    e = torch.tensor([[1.0, 0.0, 0.5, 0.0]])
    flow, _ = warp.move_at(read, e, (64, 64))
    assert flow.abs().max() > 2  # pixels of the 64² frame: far enough to tell
    points = np.array([[[0.3, 0.35], [0.62, 0.5], [0.45, 0.7]]])
    carried = emotion.follow(points, flow)[0] * 64
    ys, xs = np.mgrid[:64, :64] + 0.5
    for (x, y), (cx, cy) in zip(points[0] * 64, carried, strict=True):
        dot = torch.from_numpy(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0)).float()[None, None].expand(1, 3, 64, 64)
        with torch.no_grad():
            drawn = (warp(read, e, onto=dot * 2 - 1)[0, 0].numpy() + 1) / 2 - warp.move_at(read, e, (64, 64))[1][0, 0].numpy() / 2
        drawn = np.clip(drawn, 0, None) ** 4  # the dot's peak, not the tail the warp stretches
        found = np.array([(drawn * xs).sum(), (drawn * ys).sum()]) / drawn.sum()
        assert np.linalg.norm(found - [cx, cy]) < 0.5, (found, (cx, cy), (x, y))
        assert np.linalg.norm(found - [x, y]) > 1  # and the dot did move


def test_emotion_geometry_holds_the_warps_move_against_the_faces_where_the_face_moves(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion_geometry", None)
    import emotion_geometry

    # features: lip gap, corner lift, mouth width, brow height, eye opening
    face = {"happy@0.5": np.array([0.0, 0.1, 0.11, 0.0, -0.009]), "happy@1": np.array([0.0, 0.2, 0.22, 0.005, -0.018])}
    warp = {"happy@0.5": np.array([0.001, 0.07, 0.1, 0.0, -0.004]), "happy@1": np.array([0.002, 0.17, 0.2, 0.004, -0.012])}
    rows = emotion_geometry.geometry_rows(face, warp)
    # the lip gap and brows are not counted: the face moves them less than GEOMETRY_FLOOR
    assert rows == {"happy": {"corner_lift": {"ratio": 0.85, "half_over_full": 0.412},
                              "mouth_width": {"ratio": 0.909, "half_over_full": 0.5},
                              "eye_opening": {"ratio": 0.667, "half_over_full": 0.333}}}
    summary = emotion_geometry.tally({"c0": rows, "c1": {"happy": {"corner_lift": {"ratio": 1.3, "half_over_full": None}}}})
    assert summary["met"] == {"ratio": {"met": 2, "of": 4}, "half": {"met": 2, "of": 3}}
    assert summary["median_ratio"] == {"happy": {"corner_lift": 1.075, "mouth_width": 0.909, "eye_opening": 0.667}}
    # against the face's move as its frames show it, on the features its landmarks move
    marked = {key: value * np.array([1, 1, 1, 3, 1]) for key, value in face.items()}  # the brows: 0.015 at 1.0
    rows = emotion_geometry.geometry_rows(face, warp, marked)
    assert set(rows["happy"]) == {"corner_lift", "mouth_width", "brow_height", "eye_opening"}
    assert rows["happy"]["brow_height"] == {"ratio": 0.8, "half_over_full": 0.0, "ratio_to_landmarks": 0.267}
    assert rows["happy"]["eye_opening"]["ratio"] == rows["happy"]["eye_opening"]["ratio_to_landmarks"] == 0.667


def test_the_renderers_own_move_carries_each_point_where_its_frame_shows_it(monkeypatch):
    import cv2
    import torch
    from talker.data.face import FaceState, SyntheticFace

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion", None)
    import emotion

    face = SyntheticFace(128)
    plain = FaceState()
    assert np.abs(face.move_between(plain, plain)).max() < 1e-6
    for k, visible, hidden in ((0, [61, 291], []), (3, [105, 334], [159, 386])):  # happy: mouth corners; surprised
        moved = FaceState(emotion=np.eye(4)[k])
        flow = face.move_between(plain, moved)
        # the neutral frame moved by it is the emotional frame, away from the painted mouth
        grid = np.stack(np.meshgrid(np.arange(128), np.arange(128)), -1).astype(np.float32)
        warped = cv2.remap(face.render(plain), *(grid + flow).transpose(2, 0, 1), cv2.INTER_LINEAR).astype(float)
        shown, before = face.render(moved).astype(float), face.render(plain).astype(float)
        eyes = np.s_[30:60, 20:108]
        assert np.abs(warped - shown)[eyes].mean() < 0.3 * np.abs(before - shown)[eyes].mean()
        marks = [(face.landmarks(s)[0][:, :2] - face.offset) * face.scale for s in (plain, moved)]
        carried = emotion.follow(marks[0][None] / 128, torch.from_numpy(flow).permute(2, 0, 1)[None])[0] * 128
        landmark_move, carried_move = marks[1] - marks[0], carried - marks[0]
        assert np.abs(carried_move[visible] - landmark_move[visible]).max() < 0.3, (carried_move[visible], landmark_move[visible])
        # surprise raises the upper lids past the irises' tops: the frame shows their edge short of the landmarks
        assert (carried_move[hidden, 1] > 0.7 * landmark_move[hidden, 1]).all() and (carried_move[hidden, 1] < 0).all()
    # so the eyes' opening as the frames show it is less than the landmarks' (and more than none)
    truth = {"pose": np.zeros((2, 3)), "mouth_open": np.array([0.0, 0.5]), "mouth_width": np.zeros(2),
             "blink": np.zeros(2), "emotion": np.zeros((2, 4))}
    surprised = np.eye(4)[3]
    shown = emotion.visible_geometry(truth, surprised, range(2))[:, 4]
    marked = (emotion.truth_geometry(truth, surprised, range(2)) - emotion.truth_geometry(truth, 0 * surprised, range(2)))[:, 4]
    assert (0 < shown).all() and (shown < 0.8 * marked).all(), (shown, marked)


def test_emotion_supervision_carries_points_by_an_optical_flow_where_it_moves_the_frame(monkeypatch):
    import cv2

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion_supervision", None)
    import emotion_supervision

    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 3)
    picture = cv2.normalize(picture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    shifted = np.roll(picture, (2, 3), (0, 1))  # 3 pixels right, 2 down
    points = np.array([[[0.3, 0.4], [0.5, 0.5], [0.6, 0.35]]])
    for name, flow in emotion_supervision.optical_flows().items():
        field = flow(picture, shifted)[None]
        moved = emotion_supervision.carried(points, field)
        assert np.abs((moved - points) * 128 - [3, 2]).max() < 0.5, (name, (moved - points) * 128)


def test_emotion_takes_bench_finds_the_flow_scale_the_pairs_were_moved_by(monkeypatch):
    """bench/emotion_takes.py's pixel error by flow scale is least at the scale of the warp's flow
    that moved the neutral frames into the emotional ones."""
    import torch
    from talker.models import ExpressionWarp
    from talker.models.expression import apply_move

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion_takes", None)
    import emotion_takes

    torch.manual_seed(0)
    warp = ExpressionWarp(resolution=16, channels=8, field_scale=1)
    torch.nn.init.normal_(warp.head.weight, std=0.3)
    ys, xs = np.mgrid[:32, :32]
    pattern = np.stack([np.sin(xs / 3.0), np.cos(ys / 4.0), np.sin((xs + ys) / 5.0)], -1)
    sharp = np.repeat(((pattern + 1) * 127.5).astype(np.uint8)[None], 4, 0)
    small = sharp[:, ::2, ::2].copy()
    emotion = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1.0]])
    x = torch.from_numpy(sharp).float().permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        flow, residual = warp.move_at(torch.from_numpy(small).float().permute(0, 3, 1, 2) / 127.5 - 1, emotion, (32, 32))
        moved = apply_move(x, flow * 1.2, residual)
    pairs = {"neutral": small, "neutral_sharp": sharp, "emotion": emotion, "covered": torch.tensor([[0.0, 0, 1, 1]] * 4),
             "emotional_sharp": ((moved.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()}
    errors = emotion_takes.flow_scale_errors(type("Pipe", (), {"expression": warp})(), pairs,
                                             ("neutral_sharp", "emotional_sharp"), "neutral")
    assert errors["scales"][int(np.argmin(errors["mean_squared"]))] == 1.2, errors
    assert errors["scales"][int(np.argmin(errors["weighted"]))] == 1.2, errors


def test_emotion_takes_bench_places_the_renderers_points_in_the_takes_crop(monkeypatch):
    """The renderer's own points of a take's face state, as fractions of the crop ``talker
    prepare`` cut, lie where the face mesh finds them on that crop."""
    pytest.importorskip("mediapipe", reason="needs requirements-prepare.txt")
    from talker.data.face import FaceState, SyntheticFace
    from talker.data.prepare import crop_frame
    from talker.evaluation.metrics import FaceProbe

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion_takes", None)
    import emotion_takes

    face, crop = SyntheticFace(emotion_takes.SYNTH_SIDE), (36, 28, 182)
    truth = {"pose": np.array([[4.0, -2.0, 1.0]]), "mouth_open": np.array([0.5]), "mouth_width": np.array([0.2]),
             "blink": np.array([0.0])}
    e = np.array([[1.0, 0, 0, 0]])
    frame = crop_frame(face.render(FaceState(pose=truth["pose"][0], mouth_open=0.5, mouth_width=0.2, emotion=e[0])),
                       crop, 128)
    drawn = emotion_takes.drawn_points(face, truth, [0], e, crop)
    found = FaceProbe().landmarks(frame[None])
    assert np.median(np.linalg.norm(found - drawn, axis=-1)) * 128 < 1.5  # pixels of the 128² crop
    shifted = emotion_takes.drawn_points(face, truth, [0], e, (crop[0] + 6, crop[1], crop[2]))
    assert np.median(np.linalg.norm(found - shifted, axis=-1)) * 128 > 3  # another crop: elsewhere


def test_emotion_bench_scores_the_lips_the_warp_carries_against_neutrals_own(monkeypatch):
    """Lip-sync off the warp's own move of the lips: a move that leaves the gap as it was changes
    nothing; one that parts shut lips in the pauses counts them open under neutral's threshold; one
    that flattens the speech's opening shows in the slope."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("emotion", None)
    import emotion

    rng = np.random.default_rng(0)
    n = 200
    speaking = (np.arange(n) // 25) % 2 == 0
    mouth_open = np.where(speaking, rng.uniform(0.1, 1.0, n), 0.0)
    truth = {"mouth_open": mouth_open, "speaking": speaking}
    truth_gap = 0.02 + 0.3 * mouth_open + rng.normal(0, 0.003, n)
    neutral = 0.02 + 0.3 * mouth_open + rng.normal(0, 0.004, n)
    same = emotion.geometric_lipsync(neutral, neutral, truth_gap, truth, n)
    assert same["mouth_corr_change"] == 0 and same["silent_closed_change"] == 0 and same["gap_slope"] == 1
    parted = emotion.geometric_lipsync(neutral + np.where(speaking, 0, 0.02), neutral, truth_gap, truth, n)
    assert parted["silent_closed_change"] < -0.5 and parted["silent_closed"] < 0.5
    flat = emotion.geometric_lipsync(0.5 * neutral + 0.05, neutral, truth_gap, truth, n)
    assert flat["gap_slope"] == 0.5 and flat["mouth_corr_change"] == 0  # flattened, still in step
