"""The HTML report as a user sees it: a real prune's page rendered by headless Chromium.

Why a browser: string checks on the HTML cannot tell a blank page, a broken stylesheet or a layout that
overflows a phone screen from a good page.  Chromium is Debian's ``chromium`` package (``.ci/run``
installs it when apt is available); without it these tests skip and say why.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import MODELS
from test_cli import cli
from test_html_summary import text_of as page_text  # the visible text of a page or dumped DOM

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="headless Chromium not installed "
                                "(apt-get install -y chromium; .ci/run does this when apt is available)")


def browser(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium; no sandbox as root (containers), no GPU."""
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")
    result = subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict]:
    """The README's example: MNIST CNN at ratio 0.5 with calibration data and --verify; page and JSON."""
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "report.html"
    result = cli("prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(folder / "out.onnx"), "--ratio", "0.5",
                 "--calib", str(MODELS / "mnist_calib.npz"), "--verify", "--report", str(page), "--json")
    assert result.returncode == 0, result.stderr
    return page, json.loads(result.stdout)


def test_page_text_carries_the_key_figures(pruned: tuple[pathlib.Path, dict]) -> None:
    from onnxprune.measurement.counting import format_bytes, format_count

    page, report = pruned
    text = page_text(browser("--dump-dom", page.as_uri()).stdout)
    comparison = report["comparison"]
    assert f"{format_count(comparison['params']['before'])} → {format_count(comparison['params']['after'])}" in text
    assert f"{format_count(comparison['flops']['before'])} → {format_count(comparison['flops']['after'])}" in text
    assert f"{format_bytes(comparison['size_bytes']['before'])} → {format_bytes(comparison['size_bytes']['after'])}" in text
    assert report["counted_at"]["label"] == "at input[1,1,28,28]" and "kept · at input[1,1,28,28]" in text
    recovered = report["calibration"]["output_error"]["recovered"]
    assert f"{100 * recovered['outputs']['output']['agreement']:.1f}% top-1" in text
    assert f"relative L2 {recovered['worst_relative_l2']:.4f}" in text
    assert report["verification"]["ok"] and "verification (masked-reference oracle) passed" in text
    assert "runs like the original at input[32,1,28,28]; input[2,1,28,28]; input[1,1,28,28]" in text
    removed = sum(g["channels"] - g["kept"] for g in report["groups"] if g["kind"] == "channel")
    assert f"removed {removed} of " in text and "channels in 4 of 4 groups" in text
    for group in report["groups"]:
        assert group["label"] in text
    first = text.index("agreement with the original")
    assert first < text.index("Kept channels per group") < text.index("Settings"), "summary card comes first"


def _pixels(path: pathlib.Path):
    image = pytest.importorskip("PIL.Image", reason="pillow (the test extra) reads the screenshot").open(path)
    return image.convert("RGB")


def test_screenshot_is_a_rendered_page(pruned: tuple[pathlib.Path, dict], tmp_path: pathlib.Path) -> None:
    page, _ = pruned
    shot = tmp_path / "report.png"
    browser("--window-size=1100,1400", f"--screenshot={shot}", page.as_uri())
    image = _pixels(shot)
    assert image.size == (1100, 1400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= 200, f"only {len(colours or [])} colours: a blank page?"
    inked = sum(count for count, rgb in colours if sum(rgb) < 600)
    assert inked / (1100 * 1400) > 0.02, "almost nothing drawn"
    bar_blue = sum(count for count, rgb in colours if rgb == (0x3f, 0x6f, 0xb5))
    assert bar_blue > 500, "the kept-ratio bars are drawn (CSS applied)"


def test_narrow_window_does_not_overflow(pruned: tuple[pathlib.Path, dict], tmp_path: pathlib.Path) -> None:
    """At phone width the page itself never scrolls sideways (wide tables scroll in their own box)."""
    page, _ = pruned
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>document.title='W'+document.documentElement.scrollWidth+'/'+window.innerWidth"
                   "</script></body>"))
    dom = browser("--window-size=500,900", "--dump-dom", probe.as_uri()).stdout  # headless's narrowest
    scroll, width = map(int, re.search(r"<title>W(\d+)/(\d+)</title>", dom).groups())
    assert width <= 520 and scroll <= width, (scroll, width)
