"""report.html (evaluate.py --report): its content, and the page in a real headless browser.

The browser test needs Chromium and its driver (Debian: ``apt-get install chromium
chromium-driver``) and selenium. Without them it skips, with the reason, unless
``REQUIRE_BROWSER_TEST=1`` (set by ``.ci/run``, which installs them): then it fails.
"""

import base64
import html
import os
import re
import shutil

import numpy as np
import pytest

from separation import audio, metrics
from separation.report import EXCERPT_SECONDS, PLAYER_RATE, loudest_excerpt
import evaluate
from helpers import SR, references, voice_and_band, write_track

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of 3 tracks (one 11 s long, so the excerpt is a part of it), our estimates and a baseline."""
    root = tmp_path_factory.mktemp("stems")
    for seed, (name, seconds) in enumerate((("song_a", 11.0), ("song_b", 3.0), ("song_c", 3.0))):
        write_track(root / "test" / name, *voice_and_band(seconds, seed))
    estimates = root / "unet"
    for k, name in enumerate(("song_a", "song_b", "song_c")):
        refs, _ = references(root, name)
        # song_b worst, then song_c, then song_a
        leak = (0.1, 0.8, 0.4)[k]
        (estimates / name).mkdir(parents=True)
        audio.save_audio(estimates / name / "vocals.wav", refs["vocals"] + leak * refs["accompaniment"], SR)
        audio.save_audio(estimates / name / "accompaniment.wav", (1 - leak) * refs["accompaniment"], SR)
    out = root / "results"
    code = evaluate.main(["--references", str(root / "test"), "--estimates", str(estimates), "--out", str(out),
                          "--baselines", "mixture", "--quiet", "--report", "--metrics", "v3"])
    assert code == 0
    return out / "report.html"


@pytest.mark.slow
def test_report_is_self_contained_worst_first_with_players_and_images(report):
    page = report.read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from anywhere
    assert "http://" not in page and "https://" not in page
    sections = re.findall(r'<section class="track"><h3>([^<]+)</h3>', page)
    assert sections == ["song_b", "song_c", "song_a"]  # worst vocals SDR first
    assert page.count('<audio controls') == 9 and page.count('class="spec"') == 9
    assert page.count('class="plot"') == len(metrics.METRICS["v3"])  # one box plot per metric
    # the excerpt of the 11-s song: 10 s, the players' MP3 decodes to that length
    excerpt = re.search(r"song_a</h3>.*?Excerpt: ([\d.]+) to ([\d.]+) s", page, re.S)
    assert float(excerpt[2]) - float(excerpt[1]) == pytest.approx(EXCERPT_SECONDS)
    clip = re.search(r'song_a</h3>.*?data:audio/mpeg;base64,([^"]+)', page, re.S)[1]
    (report.parent / "clip.mp3").write_bytes(base64.b64decode(clip))
    decoded, rate = audio.load_audio(report.parent / "clip.mp3")
    assert rate == PLAYER_RATE and abs(decoded.shape[0] / rate - EXCERPT_SECONDS) < 0.2
    assert report.stat().st_size < 2_000_000


def test_loudest_excerpt_finds_the_loud_passage():
    quiet, loud = 0.01 * np.ones(5 * SR), np.ones(3 * SR)
    signal = np.concatenate([quiet, loud, quiet])
    span = loudest_excerpt(signal, SR, 4.0)
    assert span.stop - span.start == 4 * SR and span.start <= 5 * SR and span.stop >= 8 * SR
    assert loudest_excerpt(signal[: 2 * SR], SR, 4.0) == slice(0, 2 * SR)


@pytest.mark.slow
def test_report_tracks_zero_keeps_the_tables_only(tmp_path):
    root = tmp_path / "stems"
    write_track(root / "test" / "song", *voice_and_band(2.0, 0))
    assert evaluate.main(["--references", str(root / "test"), "--baselines", "irm", "--out", str(tmp_path / "out"),
                          "--quiet", "--no-plots", "--report", "--report-tracks", "0", "--metrics", "v3"]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<audio" not in page and 'class="sortable"' in page and "None drawn (--no-plots)" in page


# --------------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------------


def browser():
    """A headless Chromium through selenium and Debian's chromedriver (selenium-manager never runs)."""
    missing = [what for what, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
            pytest.fail(f"REQUIRE_BROWSER_TEST=1 but {reason}")
        pytest.skip(reason)
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: selenium-manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--mute-audio", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def column(driver, name):
    """The per-track table's cells of column ``name``, top to bottom."""
    return driver.execute_script("""
        const table = document.querySelector("table.sortable");
        const i = Array.from(table.tHead.rows[0].cells).findIndex(th => th.textContent.trim() === arguments[0]);
        return Array.from(table.tBodies[0].rows).map(r => r.cells[i].textContent);""", name)


@pytest.mark.slow
def test_report_in_headless_chromium(report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(report.as_uri())
        # every player has decoded its MP3's header (or failed), every image is decoded
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)"))
        players = driver.execute_script(
            "return Array.from(document.querySelectorAll('audio')).map(a => [a.error && a.error.code, a.duration])")
        assert len(players) == 9
        assert all(error is None and duration > 2.5 for error, duration in players), players
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) == 9 + len(metrics.METRICS["v3"]) and all(done and width > 0 for _, done, width in images), images

        # sorting: the SDR column ascending, then descending, then the track names
        initial = column(driver, "track")
        assert initial == ["song_b", "song_b", "song_c", "song_c", "song_a", "song_a"]  # worst first
        header = driver.find_element(By.XPATH, "//table[@class='sortable']//th[text()='v3_vocals_SDR']")
        header.click()
        values = [float(v) for v in column(driver, "v3_vocals_SDR")]
        assert values == sorted(values) and column(driver, "track") != initial
        header.click()
        assert [float(v) for v in column(driver, "v3_vocals_SDR")] == sorted(values, reverse=True)
        driver.find_element(By.XPATH, "//table[@class='sortable']//th[text()='method']").click()
        assert column(driver, "method") == ["mixture"] * 3 + ["unet"] * 3
        driver.find_element(By.XPATH, "//table[@class='sortable']//th[text()='track']").click()
        assert column(driver, "track") == sorted(column(driver, "track"))

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()


@pytest.mark.slow
def test_report_escapes_track_names(tmp_path):
    root = tmp_path / "stems"
    write_track(root / "test" / "a<b>&c", *voice_and_band(2.0, 0))
    assert evaluate.main(["--references", str(root / "test"), "--baselines", "mixture", "--out", str(tmp_path / "out"),
                          "--quiet", "--no-plots", "--report", "--metrics", "v3"]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert html.escape("a<b>&c") in page and "a<b>" not in page
