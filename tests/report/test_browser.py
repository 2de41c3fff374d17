"""The report in a real browser: headless Chromium finds the sections and images, no errors.

Screenshots and the page are saved under ``test-artifacts/report/`` (git-ignored;
set ``BPO_TEST_ARTIFACTS`` to put them elsewhere). Skipped, with the reason,
where Chromium is not installed (``apt-get install -y chromium``), unless
``BPO_REQUIRE_CHROMIUM`` is set (CI), where it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpo.report import ReportOptions, write_report

from .browser import Chromium, find_chromium
from .conftest import HOSTILE
from .test_report import SECTIONS

CHROMIUM = find_chromium()
# CI sets BPO_REQUIRE_CHROMIUM=1, so that a missing browser fails instead of skipping.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("BPO_REQUIRE_CHROMIUM"),
    reason="Chromium not installed (apt-get install -y chromium)",
)
ARTIFACTS = Path(
    os.environ.get("BPO_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)

# Runs in the page once it has loaded: what a reader would see.
PROBE = """(() => {
  const visible = (element) => element.offsetParent !== null;
  return {
    sections: [...document.querySelectorAll("section.part")].map((s) => ({
      id: s.id, title: s.querySelector("h2").textContent, visible: visible(s),
      images: s.querySelectorAll("img").length})),
    images: [...document.images].map((i) => ({
      alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
    pages: [...document.querySelectorAll(".gallery-page")].map((p) => ({
      id: p.id, strategy: p.dataset.strategy, visible: visible(p)})),
    scripts: document.scripts.length,
    resources: performance.getEntriesByType("resource").map((r) => r.name),
    text: document.body.textContent,
  };
})()"""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = ARTIFACTS / "report"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_in_headless_chromium(tiny_run: Path, tmp_path: Path, artifacts: Path) -> None:
    assert CHROMIUM is not None, "BPO_REQUIRE_CHROMIUM is set but Chromium is not installed"
    # Two cards a page, so that the three pairs of each strategy take two pages.
    report = write_report(tiny_run, artifacts / "report.html", options=ReportOptions(page_size=2))
    with Chromium(CHROMIUM, tmp_path / "profile") as browser:
        browser.open(report.resolve().as_uri())
        page = browser.evaluate(PROBE)

        assert [s["id"] for s in page["sections"]] == list(SECTIONS)
        assert all(s["visible"] for s in page["sections"])
        for name in ("pairs", "data", "training", "evaluation"):
            section = next(s for s in page["sections"] if s["id"] == name)
            assert section["images"] > 0, f"no image in section {name}"
        # Every image decoded, the hidden gallery pages' too.
        assert page["images"], "no image at all"
        broken = [i["alt"] for i in page["images"] if not (i["complete"] and i["width"] > 0)]
        assert broken == []
        assert any(i["alt"].startswith("weakened image") for i in page["images"])
        # Static: no script, nothing fetched, hostile record text shown as text.
        assert page["scripts"] == 0
        assert page["resources"] == []
        assert HOSTILE in page["text"]
        assert browser.console_errors() == []

        # Every strategy's gallery shows its first page without a click.
        strategies = list(dict.fromkeys(p["strategy"] for p in page["pages"]))
        assert len(strategies) == 2
        firsts = {s: next(p["id"] for p in page["pages"] if p["strategy"] == s) for s in strategies}
        assert [p["id"] for p in page["pages"] if p["visible"]] == list(firsts.values())
        first = browser.screenshot(artifacts / "report.png")
        # A strategy's pager swaps its page (CSS :target, no JavaScript) and leaves
        # the other strategy's gallery as it was.
        other = strategies[1]
        second = next(
            p["id"] for p in page["pages"] if p["strategy"] == other and p["id"] != firsts[other]
        )
        browser.evaluate(f"document.querySelector('.pager a[href=\"#{second}\"]').click()")
        after = browser.evaluate(PROBE)
        assert [p["id"] for p in after["pages"] if p["visible"]] == [firsts[strategies[0]], second]
        filtered = browser.screenshot(artifacts / f"report-{other}-page-2.png")
        assert browser.console_errors() == []
    for path in (first, filtered):
        assert path.stat().st_size > 10_000
        print(f"screenshot: {path}")
