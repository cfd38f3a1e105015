"""`mrhd serve` in a real browser: the command runs as a subprocess on loopback (a free port, random
weights, tiny encoders) and headless chromium drives the page through selenium: upload, queries,
moments, the player, the plot, thumbnails, the JSON download, bad input, long videos, two tabs.

``MRHD_SCREENSHOT=docs/img/serve.png`` also writes the README's screenshot there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.browser import browser_paths, start_chromium
from tests.helpers.videos import write_video

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MAX_DURATION = 200
WAIT = 180   # seconds for a job on a loaded 2-core machine


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    browser_paths()   # skip (or fail under CI) before any work when there is no browser
    root = tmp_path_factory.mktemp("browser-media")
    folder = root / "folder"
    folder.mkdir()
    write_video(root / "demo.mp4", duration=40.0, fps=10, width=320, height=180)
    write_video(root / "other.mp4", duration=16.0, fps=10, width=160, height=120)
    write_video(folder / "long walk.mp4", duration=171.0, fps=5, width=320, height=180, audio=False)
    write_video(folder / "too long.mp4", duration=MAX_DURATION + 30, fps=1, width=64, height=48, audio=False)
    (root / "notes.mp4").write_text("this is not a video\n")
    return {"root": root, "folder": folder}


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    """``mrhd serve`` as a user starts it; yields its URL, stops it with Ctrl+C (SIGINT)."""
    tmp = tmp_path_factory.mktemp("serve-tmp")
    env = {**os.environ, "MRHD_CACHE": str(tmp_path_factory.mktemp("serve-cache")), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "mrhd", "serve", "--weights", "random", "--encoder-size", "tiny", "--port", "0",
           "--videos", str(media["folder"]), "--max-duration", str(MAX_DURATION), "--max-upload-mb", "64"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + 300
    while url is None:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"mrhd serve exited: {proc.wait()} {proc.stderr.read()}")
        lines.append(line)
        match = re.match(r"serving on (http://\S+)", line)
        url = match.group(1) if match else None
        assert time.monotonic() < deadline, lines
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    yield {"url": url, "errors": errors, "banner": lines}
    proc.send_signal(signal.SIGTERM)   # as a service manager stops it; Ctrl+C (SIGINT) takes the same path
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    drain.join(timeout=10)
    assert not [e for e in errors if "Traceback" in e], "".join(errors)
    assert errors[-1].strip() == "mrhd serve: stopped", errors
    assert not list(tmp.glob("mrhd-serve-uploads-*")), "uploads left behind"


@pytest.fixture()
def page(server, tmp_path):
    browser = start_chromium(tmp_path / "profile")
    try:
        browser.get(server["url"])
        _wait(browser, lambda b: b.execute_script("return document.body.dataset.ready === 'true'"), 30)
        yield browser
    finally:
        browser.quit()


def _wait(browser, condition, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)


def _get_json(url):
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def _by_id(browser, element_id):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def _all(browser, css):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def _upload(browser, path: Path):
    _by_id(browser, "file-input").send_keys(str(path))


def _record_status(browser):
    """Every text the status line shows from now on (extraction progress included)."""
    browser.execute_script("""
        window.__status = [];
        new MutationObserver(() => window.__status.push(document.getElementById('status-text').textContent))
          .observe(document.getElementById('status-text'), {childList: true, characterData: true, subtree: true});
    """)


def _ask(browser, *queries):
    box = _by_id(browser, "queries")
    box.clear()
    box.send_keys("\n".join(queries))
    _by_id(browser, "submit").click()


def _results(browser, n_queries):
    """Wait for ``n_queries`` result cards (or fail with the page's error)."""
    def ready(b):
        error = _by_id(b, "error")
        if error.is_displayed():
            raise AssertionError(f"the page shows an error: {error.text}")
        return len(_all(b, "article.result")) == n_queries and _by_id(b, "results-head").is_displayed()

    _wait(browser, ready)
    return _all(browser, "article.result")


def _error_text(browser):
    _wait(browser, lambda b: _by_id(b, "error").is_displayed(), 60)
    return _by_id(browser, "error").text


def _chart(browser, index=0):
    """The drawn plot of result ``index``, read back from the SVG: curve points, shaded spans and the
    playhead, in seconds and in plot units."""
    return browser.execute_script("""
        const card = document.querySelectorAll('article.result')[arguments[0]];
        const svg = card.querySelector('svg.chart');
        const pts = card.querySelector('polyline.curve').getAttribute('points').trim().split(/\\s+/)
          .map(p => p.split(',').map(Number));
        return {x0: +svg.dataset.x0, x1: +svg.dataset.x1, duration: +svg.dataset.duration, points: pts,
                shades: [...card.querySelectorAll('rect.moment-shade')].map(r => [+r.getAttribute('x'),
                         +r.getAttribute('width'), +r.dataset.rank]),
                playhead: +card.querySelector('line.playhead').getAttribute('x1')};
    """, index)


def _to_time(chart, x):
    return (x - chart["x0"]) / (chart["x1"] - chart["x0"]) * chart["duration"]


def _check_plot(chart, prediction):
    sal = np.array(prediction["pred_saliency_scores"])
    points = np.array(chart["points"])
    assert len(points) == len(sal)
    centres = np.minimum((np.arange(len(sal)) + 0.5) * 2.0, prediction["duration"])
    np.testing.assert_allclose([_to_time(chart, x) for x in points[:, 0]], centres, atol=0.05)
    # y is an affine, decreasing function of the saliency (SVG y grows downwards)
    slope, intercept = np.polyfit(sal, points[:, 1], 1)
    assert slope < 0 and np.abs(points[:, 1] - (slope * sal + intercept)).max() < 0.05
    unique = list(dict.fromkeys((a, b) for a, b, _ in prediction["pred_relevant_windows"]))
    assert len(chart["shades"]) == min(5, len(unique))
    for (x, width, rank), (st, ed) in zip(chart["shades"], unique):
        assert abs(_to_time(chart, x) - st) < 0.05 and abs(_to_time(chart, x + width) - ed) < 0.05 + 2e-3 * ed
        assert rank == unique.index((st, ed)) + 1


def _moments_on_page(browser, index=0):
    return browser.execute_script("""
        return [...document.querySelectorAll('article.result')[arguments[0]].querySelectorAll('button.moment')]
          .map(b => [+b.dataset.start, +b.dataset.end, +b.dataset.score, b.textContent]);""", index)


def test_upload_query_play_a_moment_and_read_the_plot(page, server, media, tmp_path):
    info = _get_json(server["url"] + "/api/info")
    _upload(page, media["root"] / "demo.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text == "demo.mp4 · 0:40", 60)
    _record_status(page)
    queries = ["a white bar sweeps across the screen", "the colours slowly change"]
    _ask(page, *queries)
    cards = _results(page, 2)
    seen = page.execute_script("return window.__status")
    assert any(re.fullmatch(r"waiting for the model|reading the video|extracting features: \d+ of 20 clips", s)
               for s in seen), seen
    assert [c.get_attribute("data-query") for c in cards] == queries
    assert "2 queries on demo.mp4 · features extracted in" in _by_id(page, "results-title").text

    # the JSON download is `mrhd predict`'s format, and the page shows what it holds
    href = _by_id(page, "download").get_attribute("href")
    assert _by_id(page, "download").get_attribute("download") == "demo.moments.json"
    preds = _get_json(href)
    assert [p["query"] for p in preds] == queries
    for p in preds:
        assert set(p) == {"qid", "query", "vid", "duration", "pred_relevant_windows", "pred_saliency_scores",
                          "model", "weights"}
        assert p["vid"] == "demo" and p["duration"] == pytest.approx(40.0) and len(p["pred_saliency_scores"]) == 20
    moments = _moments_on_page(page)
    unique = list(dict.fromkeys((a, b) for a, b, _ in preds[0]["pred_relevant_windows"]))
    assert [(a, b) for a, b, _s, _t in moments] == unique
    st, ed, score, text = moments[0]
    assert text.startswith("#1") and f"{score:.4f}" in text
    assert re.search(r"\d:\d\d–\d:\d\d", text)

    # the plot: curve, shaded moments, playhead
    _check_plot(_chart(page, 0), preds[0])
    _check_plot(_chart(page, 1), preds[1])

    # click the first moment: the player jumps there and plays, the playhead follows
    _all(page, "article.result")[0].find_elements("css selector", "button.moment")[0].click()
    _wait(page, lambda b: b.execute_script("return !document.getElementById('player').paused"), 30)
    t = page.execute_script("return document.getElementById('player').currentTime")
    assert st - 0.05 <= t <= st + 1.5, (t, st)
    _wait(page, lambda b: b.execute_script("return document.getElementById('player').currentTime") > st + 0.3, 30)
    page.execute_script("document.getElementById('player').pause()")
    t = page.execute_script("return document.getElementById('player').currentTime")
    time.sleep(0.3)
    chart = _chart(page, 0)
    assert abs(_to_time(chart, chart["playhead"]) - t) < 0.1
    playing = page.execute_script("return [...document.querySelectorAll('article.result')[0]"
                                  ".querySelectorAll('button.moment.playing')].map(b => +b.dataset.start)")
    assert playing and all(s <= t for s in playing)

    # the thumbnails of the top clips are loaded images, and a click seeks to their clip
    _wait(page, lambda b: b.execute_script(
        "return [...document.querySelectorAll('.thumb img')].every(i => i.complete && i.naturalWidth > 0)"), 60)
    thumbs = _all(page, "article.result")[0].find_elements("css selector", "button.thumb")
    sal = preds[0]["pred_saliency_scores"]
    assert [int(b.get_attribute("data-clip")) for b in thumbs] == sorted(range(20), key=lambda i: -sal[i])[:5]
    thumbs[1].click()
    clip = int(thumbs[1].get_attribute("data-clip"))
    _wait(page, lambda b: abs(b.execute_script("return document.getElementById('player').currentTime")
                               - 2 * clip) < 1.5, 30)

    page.execute_script("document.getElementById('player').pause(); window.scrollTo(0, 0)")
    page.set_window_size(1280, 1560)
    shot = tmp_path / "serve.png"
    page.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MRHD_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MRHD_SCREENSHOT"])

    # a second query on the same video decodes nothing
    decoded = _get_json(server["url"] + "/api/info")["decoded_videos"]
    assert decoded == info["decoded_videos"] + 1
    _ask(page, "a third query")
    _wait(page, lambda b: "1 query on demo.mp4 · features in memory" in _by_id(b, "results-title").text)
    assert _get_json(server["url"] + "/api/info")["decoded_videos"] == decoded


def test_curve_click_seeks_the_player(page, media):
    _upload(page, media["root"] / "other.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text.startswith("other.mp4"), 60)
    _ask(page, "a query")
    _results(page, 1)
    svg = _all(page, "svg.chart")[0]
    from selenium.webdriver.common.action_chains import ActionChains

    width = svg.size["width"]
    chart = _chart(page, 0)
    # 3/4 of the way along the plot area (viewBox units -> pixels; the chart fills its width)
    target_x = chart["x0"] + 0.75 * (chart["x1"] - chart["x0"])
    ActionChains(page).move_to_element_with_offset(svg, int(target_x / 1000 * width - width / 2), 0).click().perform()
    t = page.execute_script("return document.getElementById('player').currentTime")
    assert abs(t - 0.75 * 16.0) < 0.3


def test_bad_input_is_a_message_and_the_server_keeps_serving(page, server, media):
    _upload(page, media["root"] / "notes.mp4")
    assert _error_text(page).startswith("notes.mp4: not a readable video")
    assert _by_id(page, "video-name").text == "no video yet"

    from selenium.webdriver.support.ui import Select

    select = Select(_by_id(page, "folder-select"))
    assert sorted(o.text for o in select.options) == ["long walk.mp4", "too long.mp4", "—"]
    select.select_by_visible_text("too long.mp4")
    message = _error_text(page)
    assert "too long.mp4 is 3:50 long" in message and "up to 3:20" in message and "--max-duration" in message

    _upload(page, media["root"] / "other.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text.startswith("other.mp4") and not _by_id(b, "error").is_displayed(), 60)
    _ask(page, "   ")
    assert "empty query" in _error_text(page)
    assert "Traceback" not in page.page_source
    _ask(page, "the white bar", "", "  colours ")   # blank lines are dropped, not queries
    cards = _results(page, 2)
    assert [c.get_attribute("data-query") for c in cards] == ["the white bar", "colours"]


def test_long_video_runs_as_windows_over_its_whole_length(page, server):
    from selenium.webdriver.support.ui import Select

    Select(_by_id(page, "folder-select")).select_by_visible_text("long walk.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text == "long walk.mp4 · 2:51", 60)
    _record_status(page)
    _ask(page, "a white bar")
    _results(page, 1)
    # the page polls every 250 ms, and a fast machine may extract all 86 clips between two polls:
    # the status line must have shown the wait, and any count it showed is out of 86
    seen = page.execute_script("return window.__status")
    assert any(re.fullmatch(r"waiting for the model|reading the video|extracting features: \d+ of 86 clips", s)
               for s in seen), seen
    counts = [s for s in seen if s.startswith("extracting features")]
    assert all(re.fullmatch(r"extracting features: \d+ of 86 clips", s) for s in counts), seen
    href = _by_id(page, "download").get_attribute("href")
    job = _get_json(href.rsplit("/", 1)[0])    # the job the page followed: its extraction ran over every clip
    assert job["state"] == "done" and job["progress"] == {"done": 86, "total": 86}, job
    preds = _get_json(href)
    pred = preds[0]
    assert len(pred["pred_saliency_scores"]) == 86 and pred["duration"] == pytest.approx(171.0)
    assert all(0 <= a < b <= 171.0 + 1e-6 for a, b, _ in pred["pred_relevant_windows"])
    _check_plot(_chart(page, 0), pred)


def test_two_tabs_get_their_own_results(page, server, media):
    from selenium.webdriver.support.ui import Select

    first = page.current_window_handle
    _upload(page, media["root"] / "other.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text.startswith("other.mp4"), 60)
    page.switch_to.new_window("tab")
    second = page.current_window_handle
    page.get(server["url"])
    _wait(page, lambda b: b.execute_script("return document.body.dataset.ready === 'true'"), 30)
    Select(_by_id(page, "folder-select")).select_by_visible_text("long walk.mp4")
    _wait(page, lambda b: _by_id(b, "video-name").text.startswith("long walk.mp4"), 60)
    _ask(page, "tab two asks this", "and this")
    page.switch_to.window(first)
    _ask(page, "tab one asks this")
    cards = _results(page, 1)
    assert cards[0].get_attribute("data-query") == "tab one asks this"
    assert "on other.mp4" in _by_id(page, "results-title").text
    page.switch_to.window(second)
    cards = _results(page, 2)
    assert [c.get_attribute("data-query") for c in cards] == ["tab two asks this", "and this"]
    assert "on long walk.mp4" in _by_id(page, "results-title").text
    page.switch_to.window(first)
    assert [c.get_attribute("data-query") for c in _all(page, "article.result")] == ["tab one asks this"]


def _write_avi(path: Path, duration: float = 8.0, fps: int = 10) -> Path:
    """MPEG-4 part 2 in AVI: ffmpeg reads it, browsers do not play it."""
    import av

    from mrhd.extract.synthetic import frame_pattern

    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(duration * fps)):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, 160, 120), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_format_the_browser_cannot_play_still_gets_moments_and_thumbnails(page, tmp_path):
    avi = _write_avi(tmp_path / "old camera.avi")
    _upload(page, avi)
    _wait(page, lambda b: _by_id(b, "video-name").text.startswith("old camera.avi"), 60)
    _wait(page, lambda b: _by_id(b, "player-note").is_displayed(), 60)
    assert "cannot play old camera.avi" in _by_id(page, "player-note").text
    _ask(page, "a white bar")
    cards = _results(page, 1)
    assert cards[0].find_elements("css selector", "button.moment")
    _wait(page, lambda b: b.execute_script(
        "return [...document.querySelectorAll('.thumb img')].every(i => i.complete && i.naturalWidth > 0)"), 60)
