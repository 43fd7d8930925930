"""Emotion control against the bars, over every held-out clip ``bench/emotion.py`` measured.

    python bench/emotion_summary.py bench/results/emotion_warp.json bench/results/emotion_warp_clip?.json \
        --out bench/results/emotion_summary.json

Reads the figures, measures nothing. For each emotion at 1.0, each feature the truth moved
(``counted``) on each clip: the speaker's change ÷ the truth's (the bar: 0.8–1.2) and the change at
0.5 ÷ at 1.0 (0.4–0.6; the truth's own beside it where the file has it); and lip-sync at 1.0
against the same clip's neutral (mouth correlation at most 0.03 under, lips closed in pauses at
most 3 points under), with, where the file has them, the pauses' mean lip gap less the closed
threshold and less the warp's on the truth's own frames. Writes every figure with whether it meets
its bar, and the count of those that do; and, where the files have the truth's own figures, the same
count for the truth's frames (``truth_met``: its change at 0.5 ÷ at 1.0, and its lip-sync with the
emotion against its own neutral, through the same probe and bars): what a speaker that moved the face
exactly as the truth does would score; and, with the truth rendered at the speaker's own head poses
(``met_at_speaker_pose``), each change at 1.0 against that truth's (``features_at_speaker_pose``)
and lip-sync with the lips-closed thresholds taken from it; and that posed truth's change against
the truth's own at its own poses (``truth_met.posed_over_own``, the same ratio bar): how far head
motion alone moves the probe's figures. Where the files hold what the face itself did (the truth's
features off the renderer's own landmarks), each feature row says whether the face moved it, the
way the probe reads it, by more than the probe can tell (``by_face``) and how the probe's reading
compares with that move (``truth_probe_over_geometry``); ``met_where_the_face_moves`` counts the bars
on those features alone, and ``truth_met.geometric_half`` the face's own change at 0.5 ÷ at 1.0.
Where they also hold the expression warp's own move of the speaker's face (the points the probe
found on its neutral frames carried by the warp's flow), ``geometry`` rows and ``met_by_geometry``
hold it to the same bars against the face's: at 1.0 within 80–120% of the renderer's change on
each feature that moves by at least the bench's floor, and its change at 0.5 ÷ at 1.0;
``visible_geometry`` rows and ``met_by_visible_geometry`` the same at 1.0 against the face's move
as the truth's frames show it (``bench/emotion.py``'s ``warp_visible_ratio``); and
``lipsync_met_by_geometry`` the lip-sync bar on the lip gap of the same carried points (the
warp's own move of the lips against neutral, ``lipsync_by_geometry``), each lip-sync row's
``by_geometry`` beside the probe's.

Each intensity is to move the face as much as the truth does at that intensity, and the probe's
features need not move in proportion to the renderer's intensity (the truth's own change at 0.5 ÷
at 1.0 meets 0.4–0.6 in about a third of the features), so the same ratio bar is also applied to
every other setting the file measured: each emotion at 0.25, 0.5 and 0.75 (``ratio_below_full``)
and the mix of two (``ratio_mix``), each against the truth rendered with the same intensities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from talker.evaluation.results import write_results

RATIO_BAR = (0.8, 1.2)
HALF_BAR = (0.4, 0.6)
LIPSYNC_SLACK = 0.03  # mouth correlation, and lips closed as a share of the pauses


def summarise(runs: dict[str, dict]) -> dict:
    """{name: bench/emotion.py results} → {"bars", "emotions": {emotion: {"features": {feature: [rows]},
    "lipsync": [rows], "settings": {a setting below 1.0 or a mix: [rows]}}}, "met": {kind: {"met", "of"}},
    "truth_met": the same for the truth's frames, "met_at_speaker_pose"}."""
    emotions: dict = {}
    met = {"ratio": [0, 0], "half": [0, 0], "lipsync": [0, 0], "ratio_below_full": [0, 0], "ratio_mix": [0, 0]}
    truth_met = {"half": [0, 0], "lipsync": [0, 0], "posed_over_own": [0, 0], "geometric_half": [0, 0]}
    posed_met = {"ratio": [0, 0], "lipsync": [0, 0]}
    face_met = {"ratio": [0, 0], "half": [0, 0]}
    geometry_met = {"ratio": [0, 0], "half": [0, 0]}
    visible_met = {"ratio": [0, 0]}
    geometric_sync = {"lipsync": [0, 0]}

    def tally(kind: str, ok: bool, counts: dict = met) -> bool:
        counts[kind][0] += ok
        counts[kind][1] += 1
        return ok

    def lipsync_ok(corr: float, closed: float) -> bool:
        return corr >= -LIPSYNC_SLACK and closed >= -LIPSYNC_SLACK

    for name, run in runs.items():
        features, neutral = run["features"], run["lipsync_neutral"]
        for key, row in run["settings"].items():
            emotion, _, level = key.partition("@")
            if level != "1":  # a lower intensity, or a mix of two: against the truth at the same setting
                kind = "ratio_mix" if "+" in key else "ratio_below_full"
                name_of = "+".join(part.partition("@")[0] for part in key.split("+"))
                out = emotions.setdefault(name_of, {"features": {}, "lipsync": []}).setdefault("settings", {})
                out.setdefault(key, []).append({"clip": name, **{
                    feature: {"ratio": row["ratio"][j], "ok": tally(kind, RATIO_BAR[0] <= row["ratio"][j] <= RATIO_BAR[1])}
                    for j, feature in enumerate(features) if row["counted"][j] and row["ratio"][j] is not None}})
                continue
            out = emotions.setdefault(emotion, {"features": {}, "lipsync": []})
            half = row.get("half_over_full") or [None] * len(features)
            truth_half = row.get("truth_half_over_full") or [None] * len(features)
            geometric_half = row.get("truth_geometric_half_over_full") or [None] * len(features)
            for j, feature in enumerate(features):
                if not row["counted"][j] or row["ratio"][j] is None:
                    continue
                entry = {"clip": name, "ratio": row["ratio"][j],
                         "ratio_ok": tally("ratio", RATIO_BAR[0] <= row["ratio"][j] <= RATIO_BAR[1])}
                if half[j] is not None:
                    entry.update(half_over_full=half[j], truth_half_over_full=truth_half[j],
                                 half_ok=tally("half", HALF_BAR[0] <= half[j] <= HALF_BAR[1]))
                    if truth_half[j] is not None:
                        entry["truth_half_ok"] = tally("half", HALF_BAR[0] <= truth_half[j] <= HALF_BAR[1], truth_met)
                    if geometric_half[j] is not None:
                        entry["truth_geometric_half_over_full"] = geometric_half[j]
                        tally("geometric_half", HALF_BAR[0] <= geometric_half[j] <= HALF_BAR[1], truth_met)
                if "counted_by_face" in row:
                    # the face itself moved this feature, the way the probe reads it, by more than
                    # the probe can tell (off the renderer's landmarks): the bars once more on those
                    entry["by_face"] = by_face = row["counted_by_face"][j]
                    entry["truth_probe_over_geometry"] = row["truth_probe_over_geometry"][j]
                    if by_face:
                        tally("ratio", entry["ratio_ok"], face_met)
                        if "half_ok" in entry:
                            tally("half", entry["half_ok"], face_met)
                out["features"].setdefault(feature, []).append(entry)
            if "warp_geometric_ratio" in row:  # the warp's own move against the face's, off the landmarks
                half_row = run["settings"].get(f"{emotion}@0.5", {})
                for j, feature in enumerate(features):
                    r = row["warp_geometric_ratio"][j]
                    if r is None:
                        continue
                    entry = {"clip": name, "ratio": r, "ok": tally("ratio", RATIO_BAR[0] <= r <= RATIO_BAR[1], geometry_met)}
                    if "warp_geometric_change" in half_row and row["warp_geometric_change"][j]:
                        h = round(half_row["warp_geometric_change"][j] / row["warp_geometric_change"][j], 3)
                        entry.update(half_over_full=h, half_ok=tally("half", HALF_BAR[0] <= h <= HALF_BAR[1], geometry_met))
                    out.setdefault("geometry", {}).setdefault(feature, []).append(entry)
            if "warp_visible_ratio" in row:  # and against the face's move as its frames show it
                for j, feature in enumerate(features):
                    r = row["warp_visible_ratio"][j]
                    if r is not None:
                        out.setdefault("visible_geometry", {}).setdefault(feature, []).append(
                            {"clip": name, "ratio": r, "ok": tally("ratio", RATIO_BAR[0] <= r <= RATIO_BAR[1], visible_met)})
            if "ratio_at_speaker_pose" in row:  # against the truth at the speaker's own head poses
                for j, feature in enumerate(features):
                    if not row["counted_at_speaker_pose"][j]:
                        continue
                    r = row["ratio_at_speaker_pose"][j]
                    if r is not None:
                        out.setdefault("features_at_speaker_pose", {}).setdefault(feature, []).append(
                            {"clip": name, "ratio": r, "ok": tally("ratio", RATIO_BAR[0] <= r <= RATIO_BAR[1], posed_met)})
                    if row["counted"][j]:  # the truth against itself: its change at the speaker's poses over at its own
                        q = row["truth_change_at_speaker_pose"][j] / row["truth_change"][j]
                        tally("posed_over_own", RATIO_BAR[0] <= q <= RATIO_BAR[1], truth_met)
            sync = row.get("lipsync")
            if sync:
                corr = round(sync["mouth_corr"] - neutral["mouth_corr"], 4)
                closed = round(sync["silent_closed"] - neutral["silent_closed"], 4)
                entry = {"clip": name, "mouth_corr_change": corr, "silent_closed_change": closed,
                         "ok": tally("lipsync", lipsync_ok(corr, closed))}
                if "mouth_corr_truth_frames" in sync and "mouth_corr_truth_frames" in neutral:
                    # the truth's own frames with the emotion against its neutral frames (each
                    # counted closed under its own truth's threshold, as the speaker's are)
                    t_corr = round(sync["mouth_corr_truth_frames"] - neutral["mouth_corr_truth_frames"], 4)
                    t_closed = round(sync["silent_closed_truth_frames"] - neutral["silent_closed_truth_frames"], 4)
                    entry.update(truth_mouth_corr_change=t_corr, truth_silent_closed_change=t_closed,
                                 truth_ok=tally("lipsync", lipsync_ok(t_corr, t_closed), truth_met))
                if "pause_gap" in sync and "closed_threshold" in sync:
                    # how far the pauses' lips are from the threshold that counts them closed, and
                    # how much wider the speaker's own pauses open than the warp opens the truth's
                    entry["pause_gap_over_threshold"] = round(sync["pause_gap"] - sync["closed_threshold"], 4)
                    if "pause_gap_warp_on_truth" in sync:
                        entry["pause_gap_over_warp_on_truth"] = round(sync["pause_gap"] - sync["pause_gap_warp_on_truth"], 4)
                posed = sync.get("at_speaker_pose")
                if posed and "silent_closed_neutral" in posed:
                    # lips closed with both thresholds taken from the truth at the speaker's own head
                    # poses: the head's pose is then no difference between the speaker and its truth
                    posed_closed = round(posed["silent_closed"] - posed["silent_closed_neutral"], 4)
                    entry.update(silent_closed_change_at_speaker_pose=posed_closed,
                                 ok_at_speaker_pose=tally("lipsync", lipsync_ok(corr, posed_closed), posed_met))
                moved = row.get("lipsync_by_geometry")
                if moved:  # the warp's own move of the lips, no probe on the moved frames
                    entry["by_geometry"] = {k: moved[k] for k in ("mouth_corr_change", "silent_closed_change", "gap_slope")}
                    entry["by_geometry"]["ok"] = tally("lipsync", lipsync_ok(moved["mouth_corr_change"],
                                                                            moved["silent_closed_change"]), geometric_sync)
                out["lipsync"].append(entry)
    def counted(counts: dict) -> dict:
        return {k: {"met": v[0], "of": v[1]} for k, v in counts.items()}

    truth = counted(truth_met)
    if not truth_met["geometric_half"][1]:  # files without the face's own figures
        del truth["geometric_half"]
    return {"bars": {"ratio": RATIO_BAR, "half_over_full": HALF_BAR, "lipsync_slack": LIPSYNC_SLACK},
            "emotions": emotions, "met": counted(met), "truth_met": truth,
            "met_at_speaker_pose": counted(posed_met),
            **({"met_where_the_face_moves": counted(face_met)} if face_met["ratio"][1] else {}),
            **({"met_by_geometry": counted(geometry_met)} if geometry_met["ratio"][1] else {}),
            **({"met_by_visible_geometry": counted(visible_met)} if visible_met["ratio"][1] else {}),
            **({"lipsync_met_by_geometry": counted(geometric_sync)["lipsync"]} if geometric_sync["lipsync"][1] else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="bench/emotion.py JSON files, one per held-out clip")
    parser.add_argument("--out", default="bench/results/emotion_summary.json")
    args = parser.parse_args(argv)
    runs = {}
    for path in args.results:
        run = json.loads(Path(path).read_text())
        if "settings" not in run or "lipsync_neutral" not in run:
            raise SystemExit(f"{path}: not a bench/emotion.py result (no settings / lipsync_neutral)")
        runs[Path(path).name] = run
    summary = {"command": "python bench/emotion_summary.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "clips": {name: run.get("clip") for name, run in runs.items()}, **summarise(runs)}
    write_results(args.out, summary)
    for emotion, rows in summary["emotions"].items():
        if not rows["features"]:  # a mix: its figures are in the file and the count below
            continue
        cells = [f"{feature} " + "/".join(f"{r['ratio']:.0%}" for r in entries)
                 for feature, entries in rows["features"].items()]
        sync = "/".join(f"{r['mouth_corr_change']:+.3f},{r['silent_closed_change']:+.2f}" for r in rows["lipsync"])
        print(f"{emotion:10s} {'; '.join(cells)} | lip-sync {sync}")
    print("met:", json.dumps(summary["met"]), "| the truth's own:", json.dumps(summary["truth_met"]),
          "| at the speaker's pose:", json.dumps(summary["met_at_speaker_pose"]),
          "| where the face moves:", json.dumps(summary.get("met_where_the_face_moves")),
          "| by geometry:", json.dumps(summary.get("met_by_geometry")),
          "| as the frames show it:", json.dumps(summary.get("met_by_visible_geometry")),
          "| lip-sync by geometry:", json.dumps(summary.get("lipsync_met_by_geometry")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
