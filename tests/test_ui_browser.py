"""The web UI in a real headless browser (Debian's chromium + chromedriver via selenium): the page loads, a
generation on the tiny preset completes, and the page's <video> plays media of the clip's duration."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from ovi.geometry import ClipGeometry
from ovi.presets import load_inference_config
from ovi.ui.app import DEFAULT_UI_PRESET, build_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# CI installs the browser (.ci/run), so there a missing browser fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                                reason="apt-get install chromium chromium-driver (.ci/run does)")
FRAMES = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_generates_a_playable_video(tmp_path: Path) -> None:
    # The tiny random preset keeps the browser run short; the UI's default is the shipped toy model.
    assert DEFAULT_UI_PRESET == "toy"
    cfg = load_inference_config("tiny_cpu", [f"num_frames={FRAMES}", "num_steps=2"])
    app = build_app(cfg, output_dir=tmp_path)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
        video = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#result video")))
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", video))
        driver.execute_script("arguments[0].play()", video)
        wait.until(lambda d: d.execute_script("return arguments[0].currentTime > 0", video))
        duration = driver.execute_script("return arguments[0].duration", video)
        # mp4 duration = the longer stream: 25 frames (1.042 s) or the audio (32 latents, 1.024 s + AAC padding)
        assert duration == pytest.approx(ClipGeometry.for_frames(FRAMES).duration_s, abs=0.1)
        assert list(tmp_path.glob("*.mp4")) and list(tmp_path.glob("*.json"))
    finally:
        driver.quit()
        app.close()
