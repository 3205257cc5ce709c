"""End to end: the real server on a loopback port, driven in headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request

import pytest

from tests.conftest import start_server

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def server(trained_run):
    _, run, _ = trained_run
    proc, url = start_server(["serve", "--model", str(run / "best.pt")], "health")
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


def _model_info(url: str, token: str | None = None) -> dict:
    import json

    req = urllib.request.Request(url + "model", headers={"Authorization": f"Bearer {token}"} if token else {})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def _card_names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.get_attribute("data-filename") for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")]


def test_upload_in_browser_shows_labels(server, synth_dir, tmp_path):
    """Two files in one upload (one not an image), a second upload on top, the metrics, the downloads, a phone-width layout."""
    import csv
    import io
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    info = _model_info(server)
    classes, thresholds = info["classes"], info["thresholds"]
    driver = _driver(tmp_path)
    try:
        driver.get(server)
        WebDriverWait(driver, 20).until(lambda d: "labels:" in d.find_element(By.ID, "info").text)
        assert not driver.find_element(By.ID, "token-form").is_displayed()  # no token asked of an open server
        # The model's held-out metrics: the test split when there is one, per-label F1 in the table.
        split = "test" if "test" in info["metrics"] else "val"
        m = info["metrics"][split]
        box = driver.find_element(By.ID, "metrics-box")
        assert box.is_displayed() and ("test set" if split == "test" else "validation set") in box.text
        for name, key in [("samples-F1", "samples_f1"), ("micro-F1", "micro_f1"), ("mAP", "mAP"), ("Hamming loss", "hamming_loss")]:
            assert f"{name} {m[key]:.3f}" in box.text
        assert f"images {m['n_images']}" in box.text
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#metrics tr")[1:]]
        assert [r[0] for r in rows] == classes
        assert [r[3] for r in rows] == [f"{m['per_label'][c]['f1']:.3f}" for c in classes]
        assert "threshold" in driver.find_element(By.ID, "help").text  # the one line saying what a threshold is

        # One upload, two files: the good one is tagged, the bad one shows its own error; no request-wide error.
        good = synth_dir / "original" / "4.jpg"
        bad = tmp_path / "bad.jpg"
        bad.write_text("not an image")
        driver.find_element(By.ID, "file").send_keys("\n".join([str(good), str(bad)]))
        WebDriverWait(driver, 30).until(lambda d: len(_card_names(d)) == 2)
        assert _card_names(driver) == ["4.jpg", "bad.jpg"]  # upload order
        assert driver.find_element(By.ID, "error").text == ""
        card = driver.find_element(By.CSS_SELECTOR, '.card[data-filename="4.jpg"]')
        assert "error" not in card.get_attribute("class").split()
        tags = [t.text for t in card.find_elements(By.CSS_SELECTOR, ".tag")]
        assert tags and set(tags) <= set(classes)
        rows = card.find_elements(By.CSS_SELECTOR, ".row")
        assert len(rows) == 5  # a probability bar per class, with its threshold mark and number
        assert [r.find_element(By.CSS_SELECTOR, ".name").text for r in rows] == classes
        assert [r.find_element(By.CSS_SELECTOR, ".thr-value").text for r in rows] == [f"thr {t:.3f}" for t in thresholds]
        assert len(card.find_elements(By.CSS_SELECTOR, ".row .thr")) == 5
        bad_card = driver.find_element(By.CSS_SELECTOR, '.card[data-filename="bad.jpg"]')
        assert "error" in bad_card.get_attribute("class").split()
        message = bad_card.find_element(By.CSS_SELECTOR, ".message").text
        assert message.startswith("bad.jpg") and "image" in message  # the service's own words, e.g. "bad.jpg: not a valid image"
        assert not bad_card.find_elements(By.CSS_SELECTOR, ".tag, .row")

        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 5000
        if os.environ.get("SCENETAG_SCREENSHOT"):
            shutil.copy(shot, os.environ["SCENETAG_SCREENSHOT"])

        # A second upload goes on top; the first one's cards stay. Its name is markup with a comma: shown as text.
        odd = "<img src=x onerror=window.pwned=1>, <b>2.jpg"
        shutil.copy(synth_dir / "original" / "7.jpg", tmp_path / odd)
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / odd))
        WebDriverWait(driver, 30).until(lambda d: len(_card_names(d)) == 3)
        assert _card_names(driver) == [odd, "4.jpg", "bad.jpg"]
        newest = driver.find_elements(By.CSS_SELECTOR, "#results .card")[0]
        assert odd in newest.text and not newest.find_elements(By.CSS_SELECTOR, "b, img[src='x']")
        assert driver.execute_script("return window.pwned === undefined")

        # The downloads hold every card on the page, in page order.
        buttons = [driver.find_element(By.ID, i) for i in ("download-csv", "download-json")]
        assert all(b.is_displayed() and b.is_enabled() for b in buttons)
        table = list(csv.reader(io.StringIO(driver.execute_script("return window.scenetagCsv()"))))
        assert table[0] == ["filename", "labels", *classes, "error"]
        assert [r[0] for r in table[1:]] == [odd, "4.jpg", "bad.jpg"]
        row = dict(zip(table[0], table[2]))
        assert row["labels"].split(" ") == tags and row["error"] == ""
        shown = [r.find_element(By.CSS_SELECTOR, ".pct").text for r in rows]
        assert [f"{float(row[c]) * 100:.1f}%" for c in classes] == shown  # the numbers on the card
        row = dict(zip(table[0], table[3]))
        assert row["labels"] == "" and all(row[c] == "" for c in classes) and row["error"] == message
        data = json.loads(driver.execute_script("return window.scenetagJson()"))
        preds = data["predictions"]
        assert [p["filename"] for p in preds] == [odd, "4.jpg", "bad.jpg"]
        assert preds[1]["labels"] == tags and set(preds[1]["probabilities"]) == set(classes) and preds[1]["error"] is None
        assert preds[2]["labels"] == [] and preds[2]["error"] == message
        assert all(float(row2[c]) == preds[i]["probabilities"][c] for i, row2 in ((0, dict(zip(table[0], table[1]))), (1, dict(zip(table[0], table[2])))) for c in classes)

        # A request the service refuses as a whole (here 413, too many files) is said in #error; the cards stay.
        too_many = info["limits"]["max_files"] + 1
        driver.find_element(By.ID, "file").send_keys("\n".join([str(good)] * too_many))
        WebDriverWait(driver, 30).until(lambda d: "413" in d.find_element(By.ID, "error").text)
        assert f"{too_many} files" in driver.find_element(By.ID, "error").text
        assert _card_names(driver) == [odd, "4.jpg", "bad.jpg"]

        # At phone width nothing overflows sideways and a card shows its photo above its bars.
        driver.set_window_size(420, 900)
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 420)
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        img_bottom, body_top = driver.execute_script("const c = document.querySelector('.card[data-filename=\"4.jpg\"]'); return [c.querySelector('img').getBoundingClientRect().bottom, c.querySelector('.row').getBoundingClientRect().top]")
        assert img_bottom <= body_top
    finally:
        driver.quit()


def test_upload_with_a_token_asks_for_it_once(trained_run, synth_dir, tmp_path):
    """A server started with --token: the page asks for it, says when it is wrong, keeps it for the tab, then tags."""
    import urllib.error

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, run, _ = trained_run
    proc, url = start_server(["serve", "--model", str(run / "best.pt"), "--token", "secret123"], "health")
    driver = _driver(tmp_path)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            _model_info(url)
        assert err.value.code == 401
        assert _model_info(url, "secret123")["auth"] is True
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "token-form").is_displayed())
        assert "labels:" not in driver.find_element(By.ID, "info").text
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "token-ok").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "token-form").is_displayed() and "wrong" in d.find_element(By.ID, "token-msg").text.lower())
        driver.find_element(By.ID, "token").send_keys("secret123")
        driver.find_element(By.ID, "token-ok").click()
        WebDriverWait(driver, 20).until(lambda d: "labels:" in d.find_element(By.ID, "info").text)
        assert not driver.find_element(By.ID, "token-form").is_displayed()
        assert driver.find_element(By.ID, "metrics-box").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('scenetag-token')") == "secret123"
        driver.find_element(By.ID, "file").send_keys(str(synth_dir / "original" / "4.jpg"))
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card .tag") or d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == ""
        assert _card_names(driver) == ["4.jpg"]
        assert not driver.find_element(By.ID, "token-form").is_displayed()  # asked once: the upload used the kept token
        # A reload in the same tab keeps the token: no question.
        driver.refresh()
        WebDriverWait(driver, 20).until(lambda d: "labels:" in d.find_element(By.ID, "info").text)
        assert not driver.find_element(By.ID, "token-form").is_displayed()
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(10)


def test_slow_upload_is_cut_off_and_server_stays_up(trained_run, tmp_path):
    """Slowloris: a client that sends half a body and stalls is dropped; others are still served."""
    _, run, _ = trained_run
    proc, url = start_server(["serve", "--model", str(run / "best.pt"), "--body-timeout", "2"])
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    try:
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
    proc, url = start_server(["review", "--audit", str(folder)], "api/state")
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


def test_evaluation_gallery_filters_by_label_and_outcome(trained_run, tmp_path):
    """The evaluation report's gallery of every scored image: the drop-downs show only the matching cards."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from scenetag.workflows.evaluate import evaluate_checkpoint

    _, run, _ = trained_run
    out = tmp_path / "evaluation"
    evaluate_checkpoint(run / "best.pt", out, data=run, split="test", progress=False)
    driver = _driver(tmp_path)
    try:
        driver.get((out / "report.html").as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, "#every-image .card")
        assert cards and all(c.is_displayed() for c in cards)
        outcome = Select(driver.find_element(By.CSS_SELECTOR, '#every-image select[data-filter="outcome"]'))
        for value in [o.get_attribute("value") for o in outcome.options if o.get_attribute("value")]:
            outcome.select_by_value(value)
            shown = [c for c in cards if c.is_displayed()]
            assert shown and all(value in c.get_attribute("data-outcome").split("|") for c in shown)
            assert len(shown) == sum(value in c.get_attribute("data-outcome").split("|") for c in cards)
        outcome.select_by_value("")
        label = Select(driver.find_element(By.CSS_SELECTOR, '#every-image select[data-filter="label"]'))
        for value in [o.get_attribute("value") for o in label.options if o.get_attribute("value")]:
            label.select_by_value(value)
            shown = [c for c in cards if c.is_displayed()]
            assert shown and len(shown) == sum(value in c.get_attribute("data-label").split("|") for c in cards)
    finally:
        driver.quit()
