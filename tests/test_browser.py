"""End to end: the real server on a loopback port, driven in headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], ready_path: str):
    """A scenetag server in a subprocess on a free loopback port: (process, its URL) once ``ready_path`` answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scenetag", *args, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + ready_path, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.3)
    proc.kill()
    pytest.fail("server did not start in 60 s")


@pytest.fixture
def server(trained_run):
    _, run, _ = trained_run
    proc, url = _start(["serve", "--model", str(run / "best.pt")], "health")
    yield url
    proc.terminate()
    proc.wait(10)


def _driver(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Chromium not installed (make test installs Debian's chromium + chromium-driver; apt was unavailable)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,900", f"--user-data-dir={tmp_path / 'chrome'}"]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_upload_in_browser_shows_labels(server, synth_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver(tmp_path)
    try:
        driver.get(server)
        WebDriverWait(driver, 20).until(lambda d: "labels:" in d.find_element(By.ID, "info").text)
        img = synth_dir / "original" / "4.jpg"
        driver.find_element(By.ID, "file").send_keys(str(img))
        WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".card .tag")))
        card = driver.find_element(By.CSS_SELECTOR, ".card")
        assert card.get_attribute("data-filename") == "4.jpg"
        tags = [t.text for t in card.find_elements(By.CSS_SELECTOR, ".tag")]
        assert tags and set(tags) <= {"desert", "mountains", "sea", "sunset", "trees"}
        assert len(card.find_elements(By.CSS_SELECTOR, ".row")) == 5  # a probability bar per class
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 5000
        if os.environ.get("SCENETAG_SCREENSHOT"):
            shutil.copy(shot, os.environ["SCENETAG_SCREENSHOT"])
        # A bad file gets the service's message on the page, not a crash.
        bad = tmp_path / "bad.jpg"
        bad.write_text("not an image")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(driver, 20).until(lambda d: "422" in d.find_element(By.ID, "error").text)
        assert "bad.jpg" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()


def test_slow_upload_is_cut_off_and_server_stays_up(trained_run, tmp_path):
    """Slowloris: a client that sends half a body and stalls is dropped; others are still served."""
    _, run, _ = trained_run
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scenetag", "serve", "--model", str(run / "best.pt"), "--port", str(port), "--body-timeout", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: 5000\r\n\r\n--zz\r\n")
        t0 = time.time()
        assert urllib.request.urlopen(url + "health", timeout=5).status == 200  # others are served meanwhile
        s.settimeout(20)
        data = s.recv(4096)  # the server answers or closes within the body timeout (+ slack)
        assert time.time() - t0 < 15
        assert data == b"" or data.startswith(b"HTTP/1.1 4")
        s.close()
        assert urllib.request.urlopen(url + "health", timeout=5).status == 200
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_review_with_the_keyboard_writes_the_reviewed_labels(audited, tmp_path):
    """Accept, reject, go back, skip: every decision lands in the audit folder and the accepted one in the new labels file."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    out, summary = audited
    folder = tmp_path / "audit"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("cv"))
    driver = _driver(tmp_path)
    proc, url = _start(["review", "--audit", str(folder)], "api/state")
    try:
        driver.get(url)
        progress = lambda text: WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "progress").text.startswith(text))  # noqa: E731
        progress(f"0 of {summary['suspects']} reviewed")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.getElementById('photo').naturalWidth") > 0)
        if os.environ.get("SCENETAG_REVIEW_SCREENSHOT"):  # the README's picture of the page
            driver.save_screenshot(os.environ["SCENETAG_REVIEW_SCREENSHOT"])
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("a")
        progress("1 of")
        body.send_keys("r")
        progress("2 of")
        body.send_keys(Keys.ARROW_LEFT)  # back to the second suspect, and skip it instead
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "decision").text == "reject")
        body.send_keys("s")
        WebDriverWait(driver, 10).until(lambda d: json.loads((folder / "decisions.json").read_text())["decisions"].get("1", {}).get("decision") == "skip")
        saved = json.loads((folder / "decisions.json").read_text())["decisions"]
        assert [saved[i]["decision"] for i in sorted(saved)] == ["accept", "skip"]
        assert (folder / "labels.reviewed.csv").is_file()
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(10)
