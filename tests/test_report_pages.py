"""The report as a person sees it: Debian's Chromium, driven by Playwright, opens the smoke
study's ``results/report/`` from disk (file://, no server, no network) and checks what a reader
would: no console error or failed request, every figure drawn, links into the feature browser
that open a feature page, search, cross-size links and the back button."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

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
    assert titles[:3] == ["Run", "Training and quality per size", "Feature splitting across dictionary sizes"]
    assert any("Galaxy" in t for t in titles) and sum("Functional lobes" in t for t in titles) == 2
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
    page.wait_for_url(f"**/features/feature.html?size={size}&id={feature}", timeout=15000)
    watched.clean()
