"""The app in a real headless Chromium: load, upload speech, Generate, wait for the video."""

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from conftest import write_audio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
# a quiet browser: nothing but the app on the network
QUIET = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_upload_generate_and_see_the_video(speaker_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    import app

    # TALKER_SCREENSHOT_MODEL / TALKER_SCREENSHOT: take the docs screenshot with a real speaker
    demo = app.build_demo(app.load_speakers([os.environ.get("TALKER_SCREENSHOT_MODEL", str(speaker_dir))]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    wav = write_audio(tmp_path / "speech.wav", 1.5)
    shot = Path(os.environ.get("TALKER_SCREENSHOT", tmp_path / "app.png"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_role("button", name="Generate").wait_for(timeout=30_000)  # the app is drawn
            # the pose file is asked for only where it is used: not for poses predicted from speech
            pose_file = page.get_by_text("Pose file (.csv")
            assert pose_file.count() == 0 or not pose_file.first.is_visible()
            page.get_by_text("Reference (pose file or the speaker's own)").click()
            pose_file.first.wait_for(state="visible", timeout=10_000)
            page.get_by_text("Predicted from speech").click()
            pose_file.first.wait_for(state="hidden", timeout=10_000)
            page.locator("input[type=file]").first.set_input_files(str(wav))
            page.get_by_role("button", name="Generate").click()
            video = page.locator("video[src]")
            video.first.wait_for(state="attached", timeout=120_000)
            # the browser decodes the mp4 it was given: its first frame is there, at the written size
            page.wait_for_function("() => { const v = document.querySelector('video[src]'); "
                                   "return v && v.readyState >= 2; }", timeout=60_000)
            size = video.first.evaluate("v => [v.videoWidth, v.videoHeight, v.duration]")
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert size[:2] == [256, 256] and size[2] == pytest.approx(1.5, abs=0.1)


def test_live_microphone_moves_the_face_while_audio_is_still_sent(live_speaker_dir, tmp_path):
    """Chromium's fake microphone plays a speech file; the live panel shows new pictures while it
    is still recording (each microphone block computes the newest frame)."""
    from playwright.sync_api import sync_playwright

    import app

    demo = app.build_demo(app.load_speakers([str(live_speaker_dir)]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    wav = write_audio(tmp_path / "mic.wav", 3.0, rate=48000)
    shot = Path(os.environ.get("TALKER_LIVE_SCREENSHOT", tmp_path / "live.png"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                *QUIET, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}"])
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["microphone"])
            page = context.new_page()
            page.goto(url)
            page.get_by_role("button", name="Generate").wait_for(timeout=30_000)
            page.get_by_text("Live from your microphone").click()
            panel = page.locator("[data-testid='waveform-Microphone']")
            panel.get_by_role("button", name="Record").click()
            face = page.locator("#live-face img[src]").first
            face.wait_for(state="attached", timeout=60_000)
            pictures = {face.get_attribute("src")}
            for _ in range(40):  # new pictures keep coming while the microphone still sends audio
                page.wait_for_timeout(250)
                pictures.add(face.get_attribute("src"))
                if len(pictures) >= 4:
                    break
            recording = panel.get_by_role("button", name="Stop").is_visible()
            page.screenshot(path=str(shot), full_page=True)
            panel.get_by_role("button", name="Stop").click()
            browser.close()
    finally:
        demo.close()
    assert len(pictures) >= 4 and recording, (len(pictures), recording)
