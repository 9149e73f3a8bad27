"""How fast the report opens and how big it is (issue targets: index < 2 s, a feature page < 1 s,
no file over 20 MB, total size linear in features).

Opens ``<report>/index.html`` and a few feature pages from disk (file://) in headless Chromium
(Debian's, through Playwright), several times each, and prints the median time to the load event
and to "every figure drawn" / "feature rendered"; then the total size of the report folder, the
browser's bytes per feature and the largest file.

    python benchmarks/report.py results/report [--chromium /usr/bin/chromium] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def timed_load(page, url: str, ready: str | None) -> tuple[float, float]:
    """(seconds to the load event, seconds until ``ready`` (a JS expression) holds)."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="load")
    loaded = time.perf_counter() - t0
    if ready:
        page.wait_for_function(ready, timeout=60000)
    return loaded, time.perf_counter() - t0


def browser_index(report: Path) -> dict:
    """``features/data/sizes.js`` (what the pages read): layers, sizes, bytes written per size."""
    text = (report / "features" / "data" / "sizes.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1: text.rindex(")")])


def feature_urls(report: Path, index: dict) -> list[str]:
    """Feature pages spread over layers, sizes and ids (the first, middle and last of each size)."""
    page = (report / "features" / "feature.html").resolve().as_uri()
    return [f"{page}?size={s['size']}&id={f}&layer={layer['layer']}" for layer in index["layers"]
            for s in layer["sizes"] for f in sorted({0, s["n"] // 2, s["n"] - 1})]


def sizes_on_disk(report: Path) -> tuple[int, int, Path, int]:
    files = [p for p in report.rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    browser = sum(p.stat().st_size for p in (report / "features").rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), browser, largest, largest.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report folder (results/report)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    index = (args.report / "index.html").resolve().as_uri()
    figures_drawn = ("document.querySelectorAll('.plotly-figure').length === "
                     "document.querySelectorAll('.plotly-figure[data-rendered=\"true\"]').length")
    feature_ready = "document.body.getAttribute('data-state') === 'ready'"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        index_times = [timed_load(page, index, figures_drawn) for _ in range(args.repeats)]
        index_data = browser_index(args.report)
        urls = feature_urls(args.report, index_data)
        feature_times = [timed_load(page, url, feature_ready) for url in urls for _ in range(max(1, args.repeats // 2))]
        browser.close()
    total, browser_bytes, largest, largest_size = sizes_on_disk(args.report)
    per_size = [(layer["layer"], s["size"], s["bytes"]) for layer in index_data["layers"] for s in layer["sizes"]]
    n_features = sum(size for _, size, _ in per_size)
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"index.html: load event {med(index_times, 0):.2f} s, every figure drawn {med(index_times, 1):.2f} s "
          f"(median of {len(index_times)}; target < 2 s)")
    print(f"feature page: load event {med(feature_times, 0):.2f} s, rendered {med(feature_times, 1):.2f} s "
          f"(median of {len(feature_times)} over {len(urls)} features; "
          "target < 1 s)")
    print(f"report total {total / 1e6:.1f} MB; browser {browser_bytes / 1e6:.1f} MB for {n_features} features = "
          f"{browser_bytes / max(n_features, 1):,.0f} bytes per feature")
    for layer, size, written in per_size:
        print(f"  layer {layer} n={size}: {written / 1e6:.1f} MB of chunks and search index = "
              f"{written / size:,.0f} bytes per feature")
    print(f"largest file {largest.relative_to(args.report)} {largest_size / 1e6:.2f} MB (target < 20 MB)")


if __name__ == "__main__":
    main()
