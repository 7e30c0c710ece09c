"""Small hand-made HTML views for SAE features, readable offline: token heatmaps, activation
histograms (SVG) and feature dashboards in the sae-dashboard / Neuronpedia layout (top-activating
contexts, activation histogram, decoder logit lens), plus circuitsvis's interactive token view
with its JavaScript bundle inlined (no CDN) when circuitsvis is installed.
"""

from __future__ import annotations

import html
import json
import uuid
from pathlib import Path
from typing import Sequence

VIEW_CSS = (".tokens{font-family:ui-monospace,monospace;font-size:13px;line-height:1.9;white-space:normal;"
            "overflow-wrap:anywhere}.tok{display:inline-block;white-space:pre;padding:0 2px;margin:1px;border-radius:2px;border:1px solid #eee}"
            ".tok.hl{outline:2px solid #222}.dash{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:12px 0;"
            "display:grid;grid-template-columns:minmax(220px,1fr) minmax(320px,2fr);gap:12px}"
            ".dash h4{margin:0 0 6px 0;grid-column:1/-1}.logits td{font-family:ui-monospace,monospace;font-size:12px}"
            ".neg{color:#b2182b}.pos{color:#2166ac}.ctx{margin:2px 0}")


def _color(value: float, scale: float) -> str:
    """Blue for positive, red for negative, white at 0; ``scale`` maps to full colour."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if t >= 0:
        r, g, b = 255 - int(t * (255 - 33)), 255 - int(t * (255 - 102)), 255 - int(t * (255 - 172))
    else:
        r, g, b = 255 - int(-t * (255 - 178)), 255 - int(-t * (255 - 24)), 255 - int(-t * (255 - 43))
    return f"rgb({r},{g},{b})"


def token_heatmap(tokens: Sequence[str], values: Sequence[float], *, scale: float | None = None,
                  titles: Sequence[str] | None = None, highlight: int | None = None) -> str:
    """Tokens as inline spans coloured by value (blue positive, red negative), the value (and a
    title per token, if given) in the hover text; ``highlight`` outlines one token."""
    if len(tokens) != len(values):
        raise ValueError(f"token_heatmap: {len(tokens)} tokens but {len(values)} values")
    scale = scale if scale is not None else max((abs(v) for v in values), default=0.0)
    spans = []
    for i, (t, v) in enumerate(zip(tokens, values)):
        tip = f"{v:+.4g}" + (f" | {titles[i]}" if titles else "")
        cls = "tok hl" if i == highlight else "tok"
        ink = ";color:#fff" if scale > 0 and abs(v) / scale > 0.6 else ""  # light text on the darkest colours
        spans.append(f"<span class='{cls}' style='background:{_color(v, scale)}{ink}' title='{html.escape(tip)}'>{html.escape(t)}</span>")
    return f"<div class='tokens'>{''.join(spans)}</div>"


def histogram_svg(counts: Sequence[int], edges: Sequence[float], *, width: int = 300, height: int = 110, label: str = "") -> str:
    """A bar chart of a histogram as inline SVG with its axis labels inside the drawing."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"histogram_svg: {len(counts)} counts need {len(counts) + 1} edges, got {len(edges)}")
    pad_l, pad_b, pad_t = 8, 30, 16
    plot_w, plot_h = width - 2 * pad_l, height - pad_b - pad_t
    top = max(counts, default=0) or 1
    bw = plot_w / max(1, len(counts))
    bars = "".join(f"<rect x='{pad_l + i * bw:.1f}' y='{pad_t + plot_h * (1 - c / top):.1f}' width='{max(bw - 1, 0.5):.1f}' "
                   f"height='{plot_h * c / top:.1f}' fill='#4a7fb5'><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {c}</title></rect>"
                   for i, c in enumerate(counts))
    lo, hi = (f"{edges[0]:.3g}", f"{edges[-1]:.3g}") if len(edges) else ("", "")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"font-family='sans-serif' font-size='11'>"
            f"<text x='{pad_l}' y='11'>{html.escape(label)} (max count {top})</text>{bars}"
            f"<line x1='{pad_l}' y1='{pad_t + plot_h}' x2='{width - pad_l}' y2='{pad_t + plot_h}' stroke='#333'/>"
            f"<text x='{pad_l}' y='{height - 14}'>{lo}</text>"
            f"<text x='{width - pad_l}' y='{height - 14}' text-anchor='end'>{hi}</text>"
            f"<text x='{width / 2}' y='{height - 2}' text-anchor='middle'>activation</text></svg>")


def dashboard_card(d: dict, *, title: str = "") -> str:
    """One feature's dashboard: header, activation density and histogram, decoder logit lens
    (top and bottom tokens), top-activating contexts (the activating token outlined)."""
    head = title or f"{d['hook']} feature {d['feature']}"
    logits = "".join(f"<tr><td class='neg'>{html.escape(b['token'])}</td><td class='neg'>{b['effect']:+.3f}</td>"
                     f"<td class='pos'>{html.escape(t['token'])}</td><td class='pos'>{t['effect']:+.3f}</td></tr>"
                     for b, t in zip(d["logits_bottom"], d["logits_top"]))
    contexts = "".join(
        f"<div class='ctx'>{token_heatmap(c['tokens'], c['activations'], scale=d['max_activation'] or 1.0, highlight=c['position'])}</div>"
        for c in d["contexts"]) or "<p>never active on these documents</p>"
    left = (f"<div><p>density {100 * d['frequency']:.3f}% of tokens, max activation {d['max_activation']:.3g}</p>"
            f"{histogram_svg(d['histogram']['counts'], d['histogram']['edges'], label='non-zero activations')}"
            f"<p><b>decoder logit lens</b></p><table class='logits'><tr><th colspan='2'>negative</th>"
            f"<th colspan='2'>positive</th></tr>{logits}</table></div>")
    right = f"<div><p><b>top-activating contexts</b></p>{contexts}</div>"
    return f"<div class='dash' id='feature-{html.escape(d['hook'])}-{d['feature']}'><h4>{html.escape(head)}</h4>{left}{right}</div>"


# -- circuitsvis (optional) --------------------------------------------------------------------

def circuitsvis_bundle() -> str | None:
    """circuitsvis's JavaScript bundle (shipped in its wheel) as one inline ``<script>``, or
    ``None`` when circuitsvis is not installed. Include it once per page, before any view."""
    try:
        import circuitsvis
    except ImportError:
        return None
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        return None
    js = path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")
    js = "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMappingURL"))  # no fetch of a map file
    return f"<script>{js}</script>"


def circuitsvis_tokens_multi(tokens: Sequence[str], values: Sequence[Sequence[float]], labels: Sequence[str]) -> str:
    """circuitsvis's ``ColoredTokensMulti`` view (one colouring per label, chosen by the reader),
    rendered by the inlined bundle (:func:`circuitsvis_bundle` must be on the page). ``values`` is
    tokens x labels."""
    from circuitsvis.utils.convert_props import convert_props

    if len(values) != len(tokens) or any(len(v) != len(labels) for v in values):
        raise ValueError("circuitsvis_tokens_multi: values must be tokens x labels")
    element = "circuits-vis-" + uuid.uuid4().hex[:12]
    props = convert_props({"tokens": list(tokens), "values": [list(map(float, v)) for v in values], "labels": list(labels)}).replace("</", "<\\/")
    return (f"<div id='{element}' style='margin:8px 0'></div><script>CircuitsVis.render({json.dumps(element)}, "
            f"CircuitsVis.ColoredTokensMulti, {props});</script>")
