"""The demo app over many sequential requests: does its memory or temporary disk grow?

    python bench/app_soak.py --out bench/results/app_soak.json [--model checkpoints/astronaut-64] \
        [--requests 100] [--seconds 1.5] [--keep-minutes 2]

Serves ``app.py`` in its own process (as a Space runs it) with its own temporary folders, and
sends ``--requests`` requests through gradio_client one after another: stretches of the example
speech with a new seed each time (every output is a new file), and every tenth request a file
that is not audio (the failed-request path). Every ten requests it records the server's resident
memory (with its child processes), the app's work folders (``talker-app-*``) and Gradio's cache
(uploads and finished videos, which the app keeps ``--keep-minutes`` for the browser, then
deletes). Writes the series and their growth from the first to the last tenth to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from talker.evaluation.results import write_results

ROOT = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return sum(p.stat().st_size for p in files if p.exists()), len(files)


def server_rss_mib(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech_stretches(seconds: float, folder: Path) -> list[Path]:
    """Stretches of the example recordings, ``seconds`` long, as wav files."""
    out = []
    for wav in sorted((ROOT / "examples").glob("*.wav")):
        audio, rate = sf.read(wav, dtype="float32")
        n = int(seconds * rate)
        for k in range(max(1, len(audio) // n)):
            out.append(folder / f"{wav.stem}-{k}.wav")
            sf.write(out[-1], audio[k * n : (k + 1) * n], rate)
    return out


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="speaker folder or Hub repo id (default: the bundled speaker)")
    parser.add_argument("--out", default="bench/results/app_soak.json")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.5, help="speech per request")
    parser.add_argument("--keep-minutes", type=float, default=2.0,
                        help="TALKER_KEEP_MINUTES of the served app (its default is 60; shorter here so that "
                             "the cache's deletion is seen within the run)")
    parser.add_argument("--every", type=int, default=10, help="measure every this many requests")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file
    from tqdm.auto import tqdm

    work = Path(tempfile.mkdtemp(prefix="app-soak-"))
    tmp, cache = work / "tmp", work / "gradio"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(cache), "GRADIO_SERVER_PORT": str(port),
           "TALKER_KEEP_MINUTES": str(args.keep_minutes), "GRADIO_ANALYTICS_ENABLED": "False"}
    if args.model:
        env["TALKER_MODEL"] = args.model
    log = open(work / "server.log", "w")
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=log)
    rows, failures, answered = [], [], 0
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(url, server)
        client = Client(url, download_files=str(work / "downloads"), verbose=False)
        inputs = speech_stretches(args.seconds, work)
        not_audio = work / "notes.wav"
        not_audio.write_text("not audio\n" * 100)
        start = time.perf_counter()
        for i in tqdm(range(1, args.requests + 1), desc="requests", unit="request"):
            bad = i % 10 == 5
            try:
                path = client.predict(handle_file(str(not_audio if bad else inputs[i % len(inputs)])), seed=i,
                                      api_name="/generate")
                Path(path).unlink()  # the client's download; only the server's disk is measured
                answered += 1
            except Exception as e:  # the bad request's message, or a real failure
                if bad and "not a readable audio file" in str(e):
                    answered += 1
                else:
                    failures.append(f"request {i}: {e}")
            if i % args.every == 0 or i in (1, args.requests):
                work_bytes, work_files = folder_size(tmp)
                cache_bytes, cache_files = folder_size(cache)
                rows.append({"requests": i, "seconds": round(time.perf_counter() - start, 1),
                             "server_rss_mib": round(server_rss_mib(server.pid), 1),
                             "work_folders": sum(len(list(p.iterdir())) for p in tmp.glob("talker-app-*")),
                             "work_mib": round(work_bytes / 2**20, 2), "work_files": work_files,
                             "gradio_cache_mib": round(cache_bytes / 2**20, 2), "gradio_cache_files": cache_files})
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    tracebacks = (work / "server.log").read_text().count("Traceback")
    later = rows[1:]  # after the first request's one-off allocations
    rss = [r["server_rss_mib"] for r in later]
    k = max(1, len(rss) // 10)
    results = {
        "command": "python bench/app_soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model or "bundled", "requests": args.requests, "seconds_of_speech": args.seconds,
        "keep_minutes": args.keep_minutes, "answered": answered, "failures": failures,
        "tracebacks_in_server_log": tracebacks,
        "server_rss_mib": {"after_first": rows[0]["server_rss_mib"], "first_tenth": float(np.mean(rss[:k])),
                           "last_tenth": float(np.mean(rss[-k:])), "max": max(rss),
                           "slope_mib_per_100_requests": round(float(np.polyfit([r["requests"] for r in later], rss, 1)[0] * 100), 2)},
        "work_folders_max": max(r["work_folders"] for r in rows),
        "work_mib_max": max(r["work_mib"] for r in rows),
        "gradio_cache_mib_max": max(r["gradio_cache_mib"] for r in rows),
        "gradio_cache_mib_last": rows[-1]["gradio_cache_mib"],
        "series": rows,
    }
    write_results(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k != "series"}, indent=1))
    return 0 if answered == args.requests and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
