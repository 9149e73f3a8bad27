"""The report as a person sees it: Debian's Chromium, driven by Playwright, opens the smoke
study's ``results/report/`` from disk (file://, no server, no network) and checks what a reader
would: no console error or failed request, every figure drawn, links into the feature browser
that open a feature page, search, cross-size links and the back button."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.slow

REPORT = Path("results/report")


def chromium_path() -> str:
    """Debian's Chromium (``make test`` installs it); Playwright's own download is unreachable."""
    path = os.environ.get("SAEATLAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        message = f"Chromium not found at {path}: `make test` installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra (make test installs it)")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield instance
        instance.close()


class Watched:
    """A page with every console error, page error, failed request and dialog recorded."""

    def __init__(self, browser: Any):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.failed, self.failed
        assert not self.dialogs, self.dialogs


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    w = Watched(browser)
    yield w
    w.page.close()


def index_url(study: Path) -> str:
    return (study / REPORT / "index.html").resolve().as_uri()


def wait_for_figures(page: Any) -> int:
    count = page.locator(".plotly-figure").count()
    page.wait_for_function(
        "n => document.querySelectorAll('.plotly-figure[data-rendered=\"true\"]').length === n", arg=count,
        timeout=30000)
    return count


def test_the_report_opens_from_disk_with_every_figure_drawn(smoke_study: Path, watched: Watched,
                                                            tmp_path: Path) -> None:
    page = watched.page
    page.goto(index_url(smoke_study), wait_until="load")
    n_plotly = wait_for_figures(page)
    # Every Plotly figure has a non-empty SVG or WebGL canvas; every PNG decoded.
    sizes = page.eval_on_selector_all(
        ".plotly-figure", "els => els.map(e => { const s = e.querySelector('svg.main-svg, canvas');"
                          " const r = s && s.getBoundingClientRect(); return r ? r.width * r.height : 0; })")
    images = page.eval_on_selector_all("figure img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert n_plotly >= 8 and all(area > 10_000 for area in sizes), sizes
    assert len(images) >= 8 and all(width > 100 for width in images), images
    # Every section of the stage table is there, in the study's order, and the run facts too.
    titles = page.locator("section.report-section h2").all_inner_texts()
    assert titles[:4] == ["Run", "Training and quality per size", "Ours beside the published numbers",
                          "Feature splitting across dictionary sizes"]
    assert any("Galaxy" in t for t in titles) and sum("Functional lobes" in t for t in titles) == 2
    assert any(t.startswith("Training seeds") for t in titles)
    # the side-by-side table names each published figure with its value and source
    table = page.locator("section[data-section='layer15/comparison']").inner_text()
    assert "largest.slope_goc (published protocol, our data)" in table and "≈ 0.468 (Li et al. 2024" in table
    assert "Leask et al. 2025" in table
    assert "mlflow ui --backend-store-uri" in page.inner_text("#run")
    page.screenshot(path=str(tmp_path / "report.png"))
    watched.clean()


def test_a_click_on_the_joint_map_opens_that_features_page(smoke_study: Path, watched: Watched) -> None:
    page = watched.page
    page.goto(index_url(smoke_study), wait_until="load")
    wait_for_figures(page)
    figure = page.locator("section[data-section='layer15/map'] .plotly-figure")
    figure.scroll_into_view_if_needed()
    # The first point of the first trace, in page pixels, from Plotly's own axes.
    x, y, size, feature = figure.evaluate(
        "el => { const L = el._fullLayout, t = el._fullData[0], r = el.getBoundingClientRect();"
        " return [r.left + L.xaxis._offset + L.xaxis.l2p(t.x[0]), r.top + L.yaxis._offset + L.yaxis.l2p(t.y[0]),"
        " t.customdata[0][0], t.customdata[0][1]]; }")
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    wait_url(page, f"features/feature.html?size={size}&id={feature}&layer=15")
    wait_ready(page)
    assert page.locator("#feature-title").inner_text().endswith(f"feature #{feature}")
    watched.clean()


def feature_url(study: Path, size: int, feature: int, layer: int = 15) -> str:
    return (study / REPORT / "features" / "feature.html").resolve().as_uri() + \
        f"?size={size}&id={feature}&layer={layer}"


def wait_url(page: Any, part: str) -> None:
    """Wait until the page's URL contains ``part`` (plain text: no glob, ``?`` is literal)."""
    page.wait_for_url(lambda url: part in url, timeout=15000)


def wait_ready(page: Any) -> None:
    page.wait_for_selector("body[data-state='ready']", state="attached", timeout=15000)


def test_the_sizes_table_opens_a_feature_page_with_every_panel(smoke_study: Path, watched: Watched,
                                                              tmp_path: Path) -> None:
    page = watched.page
    page.goto(index_url(smoke_study), wait_until="load")
    link = page.locator("a.size-link").first
    link.click()
    wait_url(page, "features/feature.html?size=")
    wait_ready(page)
    # The busiest feature of the smallest size: it fired, so every panel has content.
    assert "feature #" in page.inner_text("#feature-title")
    assert page.locator("svg.hist rect").count() > 0
    assert page.locator("#top .ctx").count() > 0 and page.locator("#top .tok.on").count() > 0
    assert page.locator("#logit li").count() >= 2
    assert page.locator("#neighbours a.flink").count() > 0 and page.locator("#cofiring a.flink").count() > 0
    assert page.locator("#umap .marker").count() == 1
    hover = page.locator("#top .tok.on").first.get_attribute("title")
    assert "activation" in hover
    page.screenshot(path=str(tmp_path / "feature.png"), full_page=True)
    watched.clean()


def test_search_finds_a_feature_by_a_token_and_by_id(smoke_study: Path, watched: Watched) -> None:
    page = watched.page
    page.goto(feature_url(smoke_study, 256, 0), wait_until="load")
    wait_ready(page)
    # A token this feature is known for (its first logit-lens token), typed into the search box.
    token = page.locator("#logit li code").first.inner_text().strip("\u2039\u203a")
    page.fill("#search-box", token)
    page.press("#search-box", "Enter")
    wait_url(page, "features/index.html?q=")
    wait_ready(page)
    hits = page.locator("#results-list a.flink")
    assert hits.count() > 0
    found = {(a.get_attribute("data-size"), a.get_attribute("data-id")) for a in hits.all()}
    assert ("256", "0") in found
    page.fill("#search-box", "512:17")
    page.press("#search-box", "Enter")
    wait_url(page, "index.html?q=512%3A17")
    wait_ready(page)
    assert [a.get_attribute("href") for a in page.locator("#results-list a.flink").all()] == \
        ["feature.html?size=512&id=17&layer=15"]
    watched.clean()


def test_a_parent_to_child_link_opens_the_child_and_back_returns(smoke_study: Path, watched: Watched) -> None:
    page = watched.page
    start = feature_url(smoke_study, 256, 0)
    page.goto(start, wait_until="load")
    wait_ready(page)
    # Walk the smallest size until a feature with children in the next size.
    for feature in range(1, 256):
        if page.locator("#children a.flink").count():
            break
        page.goto(feature_url(smoke_study, 256, feature), wait_until="load")
        wait_ready(page)
    child = page.locator("#children a.flink").first
    parent_url, child_id = page.url, child.get_attribute("data-id")
    child.click()
    wait_url(page, f"feature.html?size=512&id={child_id}&layer=15")
    wait_ready(page)
    # The child names its parent: the page we came from.
    parent = page.locator("#parent a.flink")
    assert parent.get_attribute("data-size") == "256" and f"id={parent.get_attribute('data-id')}&" in parent_url
    page.go_back()
    wait_url(page, parent_url.split("/")[-1])
    wait_ready(page)
    assert page.locator("#children a.flink").count() > 0
    watched.clean()


def test_an_unknown_feature_says_so_without_an_error(smoke_study: Path, watched: Watched) -> None:
    page = watched.page
    page.goto(feature_url(smoke_study, 256, 99999), wait_until="load")
    page.wait_for_selector("body[data-state='error']", state="attached")
    assert "there is no feature 99999" in page.inner_text("#status")
    watched.clean()


# Each payload of tests/data/hostile_corpus.txt as the page must show it, and a search that finds it.
PAYLOADS = {"<script>window.__saeatlasXss=1</script>": "saeatlasXss=1",
            '"><img src=x onerror=window.__saeatlasXss=2>': "onerror",
            "{{ 7*7 }}": "7*7",
            "[U+202E]evil[U+202C]": "evil",
            "NUL [NUL] byte": "NUL",
            "bell [BEL] and </script>": "bell"}


def shown_texts(page: Any, browser_index: str, query: str, pages: int = 3) -> str:
    """The search results' snippets for ``query`` and the text of its first feature pages."""
    page.goto(browser_index + "?q=" + quote(query), wait_until="load")
    wait_ready(page)
    texts = "\n".join(page.locator("#results-list .snippet").all_inner_texts())
    for href in page.locator("#results-list a.flink").evaluate_all(f"els => els.slice(0, {pages}).map(a => a.href)"):
        page.goto(href, wait_until="load")
        wait_ready(page)
        texts += page.inner_text("main")
        # Nothing a payload would create exists: no image with src x, no script in the content.
        assert page.locator("main img[src='x'], main script, main iframe").count() == 0
        assert page.evaluate("typeof window.__saeatlasXss") == "undefined"
    return texts


def test_hostile_corpus_text_shows_literally_and_runs_nothing(smoke_study: Path, watched: Watched) -> None:
    """tests/data/hostile_corpus.txt went through the whole smoke graph: each payload shows as
    text (bidi, NUL and control characters as visible labels) in the search results or on the
    feature pages it leads to, and no payload ran (the flag it would set stays unset, no dialog)."""
    page = watched.page
    browser_index = (smoke_study / REPORT / "features" / "index.html").resolve().as_uri()
    missing = [payload for payload, query in PAYLOADS.items()
               if payload not in shown_texts(page, browser_index, query)]
    assert not missing, missing
    assert "49" not in [t.strip() for t in page.locator(".tok").all_inner_texts()]  # {{ 7*7 }} not evaluated
    # The report itself (joint-map hovers, tables) ran nothing either.
    page.goto(index_url(smoke_study), wait_until="load")
    wait_for_figures(page)
    assert page.evaluate("typeof window.__saeatlasXss") == "undefined"
    watched.clean()
