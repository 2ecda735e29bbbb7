"""The atlas as a static site: plain HTML from string templates, opened from the file system.

``index.html`` (per selector and culture its neurons, with a layer histogram and the ablation
effect), ``neurons/L{layer}-N{neuron}.html`` (profile and top/bottom items), ``pairs/A--B.html``
(the neurons two cultures share), ``thumbs/`` (written by `thumbnails`), ``style.css``. Every
link is relative, so the folder works anywhere, with no server and no network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from html import escape
from pathlib import Path
from string import Template

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from culture_neurons.atlas.site import AtlasData, Example, NeuronPage, neuron_slug  # noqa: E402
from culture_neurons.statistics import CI_LEVEL  # noqa: E402

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: #1a5fb4; text-decoration: none; } a:hover { text-decoration: underline; }
.neurons a { display: inline-block; margin: 0 0.4em 0.2em 0; font-family: monospace; }
.thumb { width: 96px; height: 96px; object-fit: contain; background: #eee; }
.notext { width: 96px; height: 96px; display: flex; align-items: center; justify-content: center;
          background: #f6f6f6; color: #888; font-size: 0.8em; }
.muted { color: #777; } .ok { color: #26a269; } .bad { color: #c01c28; }
ol.options { margin: 0; padding-left: 1.4em; } .chosen { font-weight: bold; }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<link rel="stylesheet" href="${root}style.css"></head>
<body><p class="muted"><a href="${root}index.html">atlas of $model</a></p>
<h1>$title</h1>
$body
</body></html>
""")


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _neuron_link(layer: int, neuron: int, root: str, rank: int | None = None) -> str:
    slug = neuron_slug(layer, neuron)
    label = f"L{layer}/{neuron}" + ("" if rank is None else f" #{rank + 1}")
    return f'<a href="{root}neurons/{slug}.html">{escape(label)}</a>'


def _pair_slug(a: str, b: str) -> str:
    return f"{a}--{b}"


# -- the index ----------------------------------------------------------------------------------
def layer_histograms(
    data: AtlasData, selectors: list[str], n_layers: int, path: str | Path
) -> None:
    """Chosen neurons per culture and layer, one small heat map per selector, four to a row
    (PNG): the site shows each selector's own, the report all of them."""
    sets = data.sets()
    columns = min(len(selectors), 4)  # a grid, so that many selectors stay readable
    rows = -(-len(selectors) // columns)
    fig, axes = plt.subplots(
        rows, columns, squeeze=False,
        figsize=(columns * min(2 + 0.25 * n_layers, 9),
                 rows * (0.9 + 0.22 * max(len(sets[s]) for s in selectors))),
    )  # fmt: skip
    for ax in axes.flat[len(selectors) :]:
        ax.set_visible(False)
    for ax, selector in zip(axes.flat, selectors, strict=False):
        cultures = sorted(sets[selector])
        counts = np.zeros((len(cultures), n_layers), int)
        for row, culture in enumerate(cultures):
            for layer, _ in sets[selector][culture]:
                counts[row, layer] += 1
        image = ax.imshow(counts, aspect="auto", cmap="Blues", interpolation="nearest")
        ax.set_yticks(range(len(cultures)), cultures, fontsize=7)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{selector}: chosen neurons per layer", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _index_body(data: AtlasData, pairs: dict, histograms: dict[str, str]) -> str:
    sets = data.sets()
    parts = [
        f"<p>{len(data.activity.neurons)} neurons chosen by {len(data.selectors)} selector(s): "
        "each culture's best-ranked neurons (#1 is the best). A neuron's page shows its "
        "activation profile over cultures and the identification items it fires on most and "
        "least. Self / cross: the culture's accuracy change (Δ, points) when its selected "
        "neurons are deactivated, on its own items and on average on the others'.</p>"
    ]
    parts.append("<ul>" + "".join(
        f'<li><a href="#{escape(s)}">{escape(s)}</a></li>' for s in data.selectors
    ) + '<li><a href="#pairs">culture pairs that share neurons</a></li></ul>')  # fmt: skip
    by_selector: dict[str, dict[str, list]] = {s: {} for s in data.selectors}
    for c in sorted(data.choices, key=lambda c: c.rank):
        by_selector[c.selector].setdefault(c.culture, []).append(c)
    for selector in data.selectors:
        effects = data.effects.get(selector, {})
        parts.append(f'<h2 id="{escape(selector)}">{escape(selector)}</h2>')
        if selector in histograms:
            parts.append(f'<img src="{histograms[selector]}" alt="layers of {escape(selector)}">')
        rows = []
        for culture, chosen in sorted(by_selector[selector].items()):
            effect = effects.get(culture)
            cells = (
                f'<td class="num">{_fmt(effect.self, 1)}</td>'
                f'<td class="num">{_fmt(effect.cross, 1)}</td>'
                if effect
                else '<td class="muted">–</td><td class="muted">–</td>'
            )
            links = " ".join(_neuron_link(c.layer, c.neuron, "", c.rank) for c in chosen)
            rows.append(
                f"<tr><td>{escape(culture)}</td><td class='num'>{len(sets[selector][culture])}"
                f"</td>{cells}<td class='neurons'>{links}</td></tr>"
            )
        parts.append(
            "<table><tr><th>culture</th><th>neurons</th><th>self Δ</th><th>cross Δ</th>"
            "<th>best-ranked neurons</th></tr>" + "".join(rows) + "</table>"
        )
    parts.append('<h2 id="pairs">Culture pairs that share neurons</h2>')
    if not pairs:
        parts.append("<p class='muted'>No two cultures share a chosen neuron.</p>")
    else:
        items = [
            f'<li><a href="pairs/{_pair_slug(a, b)}.html">{escape(a)} – {escape(b)}</a>: '
            + ", ".join(f"{escape(s)} {len(n)}" for s, n in shared.items())
            + "</li>"
            for (a, b), shared in pairs.items()
        ]
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(parts)


# -- a neuron's page ------------------------------------------------------------------------------
def profile_svg(rows: list[dict], key: str, label: str, chosen: Iterable[str]) -> str:
    """A small horizontal bar chart of one profile column with its interval, as inline SVG (a
    page per neuron would make thousands of image files otherwise); cultures that chose the
    neuron are drawn darker."""
    chosen = set(chosen)
    width, bar_h, left, right = 360, 14, 60, 16
    height = 24 + bar_h * len(rows)
    ends = [r[f"{key}_hi"] for r in rows if np.isfinite(r[f"{key}_hi"])]
    top = max(ends + [r[key] for r in rows])
    scale = (width - left - right) / top if top > 0 else 0.0
    shapes = [
        f'<text x="{left}" y="12" font-size="11">{escape(label)} ({CI_LEVEL:.0f}% interval)</text>'
    ]
    for i, row in enumerate(rows):
        y = 18 + i * bar_h
        colour = "#1a5fb4" if row["culture"] in chosen else "#99c1f1"
        shapes.append(
            f'<text x="{left - 4}" y="{y + 10}" font-size="10" text-anchor="end">'
            f"{escape(row['culture'])}</text>"
            f'<rect x="{left}" y="{y + 2}" width="{row[key] * scale:.1f}" height="{bar_h - 4}" '
            f'fill="{colour}"><title>{escape(row["culture"])}: {_fmt(row[key], 4)}</title></rect>'
        )
        lo, hi = row[f"{key}_lo"], row[f"{key}_hi"]
        if np.isfinite(lo) and np.isfinite(hi):
            mid = y + bar_h / 2
            shapes.append(
                f'<line x1="{left + lo * scale:.1f}" x2="{left + hi * scale:.1f}" y1="{mid}" '
                f'y2="{mid}" stroke="#333" stroke-width="1.2"/>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img">{"".join(shapes)}</svg>'
    )


def _examples_table(examples: list[Example]) -> str:
    rows = []
    for e in examples:
        image = (
            f'<img class="thumb" src="../thumbs/{escape(e.thumbnail)}" alt="{escape(e.item_id)}">'
            if e.thumbnail
            else '<div class="notext">text item</div>'
        )
        options = "".join(
            f"<li{' class=chosen' if k == e.choice else ''}>{escape(o)}"
            f"{' <span class=ok>✓</span>' if k == e.label else ''}</li>"
            for k, o in enumerate(e.options)
        )
        verdict = {1: '<span class="ok">correct</span>', 0: '<span class="bad">wrong</span>'}
        rows.append(
            f"<tr><td>{image}</td><td>{escape(e.culture)}</td><td class='num'>"
            f"{_fmt(e.activation, 4)}</td><td class='num'>{_fmt(e.firing_rate, 3)}</td>"
            f"<td>{escape(e.question)}<ol class='options' type='A'>{options}</ol>"
            f"<span class='muted'>{escape(e.item_id)}</span></td>"
            f"<td>{escape(e.answer)}<br>{verdict.get(e.correct, '')}</td></tr>"
        )
    return (
        "<table><tr><th>image</th><th>culture</th><th>activation</th><th>firing rate</th>"
        "<th>question and options (the model's choice in bold, ✓ the correct one)</th>"
        "<th>model's answer</th></tr>" + "".join(rows) + "</table>"
    )


def _neuron_body(page: NeuronPage) -> str:
    chosen = (
        "".join(
            f"<tr><td>{escape(c.selector)}</td><td>{escape(c.culture)}</td>"
            f"<td class='num'>{c.rank + 1}</td></tr>"
            for c in page.choices
        )
        or "<tr><td colspan=3 class='muted'>none</td></tr>"
    )
    cultures = {c.culture for c in page.choices}
    return "\n".join(
        [
            f"<p>Decoder layer {page.layer}, MLP neuron {page.neuron}. Largest per-item "
            f"activation {_fmt(page.max_activation, 4)}; fires on "
            f"{page.firing_rate * 100:.1f}% of all valid tokens.</p>",
            "<h2>Chosen by</h2><table><tr><th>selector</th><th>culture</th><th>rank</th></tr>"
            + chosen
            + "</table>",
            "<h2>Activation profile over cultures</h2>"
            "<p class='muted'>Over all identification items of each culture: the sum of positive "
            "act_fn outputs and of firing tokens over its valid tokens; bars of the cultures "
            "that chose it are darker.</p>",
            profile_svg(page.profile, "mean_activation", "mean positive activation", cultures),
            profile_svg(page.profile, "firing_rate", "firing rate", cultures),
            f"<h2>Top {len(page.top)} items by activation</h2>",
            _examples_table(page.top),
            f"<h2>Lowest {len(page.bottom)} items, for contrast</h2>",
            _examples_table(page.bottom),
        ]
    )


def _pair_body(a: str, b: str, shared: dict[str, list[tuple[int, int]]]) -> str:
    parts = [f"<p>Neurons chosen for both {escape(a)} and {escape(b)}, per selector.</p>"]
    for selector, neurons in shared.items():
        links = " ".join(_neuron_link(layer, n, "../") for layer, n in neurons)
        parts.append(f"<h2>{escape(selector)}: {len(neurons)}</h2><p class='neurons'>{links}</p>")
    return "\n".join(parts)


def _write(path: Path, title: str, model: str, body: str, root: str) -> None:
    path.write_text(
        PAGE.substitute(title=escape(title), model=escape(model), body=body, root=root),
        encoding="utf-8",
    )


def write_site(data: AtlasData, out_dir: str | Path, n_layers: int) -> list[NeuronPage]:
    """Write the site into ``out_dir`` (its ``thumbs/`` already there); returns the pages."""
    out = Path(out_dir)
    (out / "neurons").mkdir(parents=True, exist_ok=True)
    (out / "pairs").mkdir(exist_ok=True)
    (out / "style.css").write_text(STYLE)
    histograms = {}
    for selector in data.selectors:
        if data.sets()[selector]:
            name = f"layers_{selector}.png"
            layer_histograms(data, [selector], n_layers, out / name)
            histograms[selector] = name
    pairs = data.pair_overlaps()
    title = f"Neuron atlas of {data.model}"
    _write(out / "index.html", title, data.model, _index_body(data, pairs, histograms), "")
    pages = data.neuron_pages()
    for page in tqdm(pages, desc="atlas: neuron pages", unit="page"):
        title = f"{data.model}: layer {page.layer}, neuron {page.neuron}"
        _write(out / "neurons" / f"{page.slug}.html", title, data.model, _neuron_body(page), "../")
    for (a, b), shared in pairs.items():
        title = f"{a} and {b}: shared neurons"
        _write(out / "pairs" / f"{_pair_slug(a, b)}.html", title, data.model,
               _pair_body(a, b, shared), "../")  # fmt: skip
    log.info("atlas: %d neuron pages, %d pair pages in %s", len(pages), len(pairs), out)
    return pages
