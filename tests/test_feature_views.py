"""Hand-made HTML views of SAE features (token heatmaps, SVG histograms, dashboards), and the
report page rendered offline in a real headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from interp.report.feature_views import (VIEW_CSS, circuitsvis_bundle, circuitsvis_tokens_multi, dashboard_card, histogram_svg,
                                         token_heatmap)

DASHBOARD = {
    "hook": "blocks.1.hook_resid_pre", "feature": 17, "frequency": 0.0123, "max_activation": 2.5,
    "histogram": {"counts": [5, 3, 0, 1], "edges": [0.0, 0.5, 1.0, 1.5, 2.5]},
    "contexts": [{"tokens": ["here", "are", "some", "numbers", ":", "412", ","], "activations": [0, 0, 0.1, 0, 0, 2.5, 0.2],
                  "position": 5, "max": 2.5}],
    "logits_top": [{"token": "owl", "effect": 0.8}, {"token": "412", "effect": 0.5}],
    "logits_bottom": [{"token": "cat", "effect": -0.7}, {"token": "<eos>", "effect": -0.4}],
}


def test_token_heatmap__colours_by_sign_and_escapes_tokens():
    out = token_heatmap(["<bos>", "owl", "cat"], [0.0, 1.0, -1.0], titles=["a", "b", "c"], highlight=1)
    assert "&lt;bos&gt;" in out and "<bos>" not in out
    spans = re.findall(r"background:rgb\((\d+),(\d+),(\d+)\)", out)
    assert spans[0] == ("255", "255", "255")  # 0 is white
    assert int(spans[1][2]) > int(spans[1][0])  # positive: blue
    assert int(spans[2][0]) > int(spans[2][2])  # negative: red
    assert out.count("tok hl") == 1 and "+1 | b" in out
    with pytest.raises(ValueError, match="3 tokens but 2 values"):
        token_heatmap(["a", "b", "c"], [1, 2])


def test_histogram_svg__bars_scale_to_the_largest_count_inside_the_drawing():
    svg = histogram_svg([4, 2, 0], [0, 1, 2, 3], width=200, height=100)
    heights = [float(h) for h in re.findall(r"<rect [^>]*height='([\d.]+)'", svg)]
    assert heights[0] == pytest.approx(2 * heights[1]) and heights[2] == 0
    for x in re.findall(r"<text x='([\d.]+)'", svg):
        assert 0 <= float(x) <= 200
    with pytest.raises(ValueError, match="need 4 edges"):
        histogram_svg([1, 2, 3], [0, 1])


def test_dashboard_card__holds_histogram_logit_lens_and_contexts():
    card = dashboard_card(DASHBOARD)
    assert "id='feature-blocks.1.hook_resid_pre-17'" in card and "<svg" in card
    assert card.index("cat") < card.index("owl")  # negative column first, as in sae-dashboard's tables
    assert "1.230%" in card and "412" in card and "tok hl" in card


def test_circuitsvis_view__inlines_the_bundle_without_network():
    pytest.importorskip("circuitsvis")
    bundle = circuitsvis_bundle()
    assert bundle.startswith("<script>") and "var CircuitsVis" in bundle
    assert "unpkg.com" not in bundle.split("sourceMappingURL")[0][-2000:] and "sourceMappingURL" not in bundle
    view = circuitsvis_tokens_multi(["a", "</script>"], [[1.0, 0.5], [-1.0, 0.0]], ["x", "y"])
    assert "CircuitsVis.ColoredTokensMulti" in view and "</script>\"" not in view.split("<script>", 1)[1][:-9]


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CLIP_CHECK = """<script>
window.addEventListener('load', () => setTimeout(() => {
  let clipped = [];
  for (const svg of document.querySelectorAll('svg')) {
    const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBBox();
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > w + 0.5 || b.y + b.height > h + 0.5) clipped.push('svg:' + t.textContent);
    }
  }
  for (const el of document.querySelectorAll('body *')) {
    const s = getComputedStyle(el);
    if (['hidden', 'clip'].includes(s.overflowX) && el.scrollWidth > el.clientWidth + 1) clipped.push('html:' + el.className);
  }
  for (const img of document.querySelectorAll('img')) if (!img.complete || img.naturalWidth === 0) clipped.push('img');
  const cv = document.querySelectorAll('[id^=circuits-vis-]');
  document.body.setAttribute('data-check', JSON.stringify({clipped, circuitsvis: cv.length,
    rendered: Array.from(cv).filter(d => d.children.length > 0).length}));
}, 500));
</script>"""


def render_in_chromium(page: Path, screenshot: Path | None = None, width: int = 1200, height: int = 2400) -> str:
    """The DOM of ``page`` after its scripts ran, in headless Chromium with no network use;
    optionally a screenshot PNG."""
    profile = page.parent / "chromium-profile"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=8000", f"--window-size={width},{height}"]
    if screenshot is not None:
        subprocess.run(flags + [f"--screenshot={screenshot}", page.as_uri()], check=True, capture_output=True, timeout=180)
    return subprocess.run(flags + ["--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=180).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_feature_views__render_offline_in_headless_chromium_without_clipping(tmp_path):
    import json

    parts = [dashboard_card(DASHBOARD), token_heatmap(["user", ":", "412", "owl"] * 30, [0.1, -0.2, 0.9, -0.5] * 30)]
    bundle = circuitsvis_bundle()
    if bundle:
        parts.append(bundle + circuitsvis_tokens_multi(["a", "b"], [[1.0], [-1.0]], ["hook"]))
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><style>{VIEW_CSS}</style></head>"
                    f"<body style='max-width:1100px'>{''.join(parts)}{CLIP_CHECK}</body></html>")
    dom = render_in_chromium(page, tmp_path / "shot.png", height=900)
    check = json.loads(html.unescape(re.search(r'data-check="([^"]*)"', dom).group(1)))
    assert check["clipped"] == []
    if bundle:
        assert check["circuitsvis"] == 1 and check["rendered"] == 1
    assert (tmp_path / "shot.png").stat().st_size > 5000
