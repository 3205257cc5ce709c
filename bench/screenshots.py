"""Screenshots of a run's pages for the README (not a test): the dashboard and the evaluation gallery.

    .venv/bin/python bench/screenshots.py --run runs/default [--out docs]

Rebuilds RUN/index.html from the run folder, then draws, in headless Chromium,
``dashboard.png`` (the top of RUN/index.html) and ``evaluation_gallery.png`` (the
evaluation report's gallery of every scored image, filtered to false negatives).
Needs the run's evaluation (``scenetag evaluate --model RUN/best.pt --split test --out RUN/evaluation``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from scenetag.runs import REPORT_PAGE, RunDir
from scenetag.train.dashboard import write_dashboard


def browser(width: int, height: int) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/default")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    run, out = RunDir(args.run), Path(args.out)
    write_dashboard(run.path)
    driver = browser(1100, 1500)
    try:
        driver.get(run.dashboard.resolve().as_uri())
        time.sleep(1)
        driver.save_screenshot(str(out / "dashboard.png"))
        driver.get((run.evaluation / REPORT_PAGE).resolve().as_uri())
        Select(driver.find_element(By.CSS_SELECTOR, '#every-image select[data-filter="outcome"]')).select_by_value("false negative")
        driver.execute_script("document.getElementById('every-image').scrollIntoView()")
        time.sleep(1)
        driver.save_screenshot(str(out / "evaluation_gallery.png"))
    finally:
        driver.quit()
    print(f"wrote {out / 'dashboard.png'} and {out / 'evaluation_gallery.png'} from {run}")


if __name__ == "__main__":
    main()
