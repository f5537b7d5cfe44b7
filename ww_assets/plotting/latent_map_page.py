"""The interactive latent-space map: one self-contained HTML page (Bokeh, every resource inlined, works offline).

Each image is a point at its UMAP position (``analysis/latent_umap.parquet``), coloured by the machine's anomaly
score, the volunteers' fraction or the image's top Talk hashtag (a Select switches between them in the browser).
Hovering a point shows its cutout as a small inline WebP thumbnail with its numbers; clicking it shows, in the side
panel, the cutout beside the model's reconstruction and the residual in units of the pixel noise
(``ww_assets.scores.residuals``, against the expected observation the scores read), its position and a link to the survey
viewer (``ww_assets.plotting.sky``). The page loads nothing from the network: Bokeh's JavaScript is inlined
(``bokeh.resources.INLINE``) and every image is a ``data:`` URI.

Page size: Bokeh's inlined JavaScript is about 1.5 MB; each point adds its 48-px thumbnail (~1 kB) and, for the
``max_details`` points that carry one (500 by default), its three-panel detail image (~6 kB: the residual's
noise does not compress). The details go to the most
anomalous images and the volunteers' favourites in turn (``detail_order``), so a large map keeps the interesting
clicks and a bounded page; a click on any other point shows its thumbnail enlarged and says why.

Layers: ``map_points`` (the UMAP joined with the image table), ``thumbnail_uri`` / ``detail_uri`` (images as data
URIs), ``reconstructions`` (the model's reconstruction and residual map of some images), ``write_latent_map_page``
(frames and URIs in, the page written atomically) and ``build_latent_map_page`` (all of it from a storage root,
what the ``latent_map_page`` asset calls). No Dagster here.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ww_assets.plotting.sky import SURVEY_VIEWER, format_radec, survey_viewer_url
from ww_assets.storage import StorageLayout, atomic_path

__all__ = ["COLOUR_OPTIONS", "LatentMapPage", "build_latent_map_page", "colour_columns", "detail_order",
           "detail_uri", "map_points", "reconstructions", "thumbnail_uri", "write_latent_map_page"]

#: the Select's colourings: (option label, column of the point source holding each point's colour)
COLOUR_OPTIONS = {"anomaly score": "c_anomaly", "volunteer fraction": "c_fraction", "top hashtag": "c_tag"}
#: the Bokeh model names the browser test (and a curious reader of the page's JSON) looks up
POINTS_NAME, SELECT_NAME, PANEL_NAME, LEGEND_NAME = "latent_points", "colour_by", "detail_panel", "colour_key"
NONE_COLOUR = "#c8c8c8"
#: residual maps are drawn from -RESIDUAL_LIMIT to +RESIDUAL_LIMIT noise sigmas
RESIDUAL_LIMIT = 5.0
#: 10 categorical colours (matplotlib's tab10), the hashtag colouring's palette
TAG_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")
#: what the map reads of the image table when it is there
TABLE_COLUMNS = ("anomaly_score_sigma", "anomaly_score", "fraction", "shown", "selected", "ci_low", "ci_high",
                 "top_tag", "top_tag_share", "subject_id", "ra", "dec", "label")


@dataclass
class LatentMapPage:
    """What ``write_latent_map_page`` wrote."""

    path: Path
    n_points: int
    n_thumbnails: int          # points whose hover shows their cutout
    n_details: int             # points whose click shows image | reconstruction | residual (or image alone)
    n_residual_maps: int       # details that carry the model's reconstruction and residual
    page_bytes: int
    colour_options: list[str]  # the Select's labels, as shown ("top hashtag (none)" without hashtags)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- the points
def map_points(umap: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per point of the map: ``image_id``, ``batch``, ``umap_x``, ``umap_y`` and what the image table
    (``analysis/image_table.parquet``, may be None) knows of the image; columns it lacks are NaN. Points without
    a finite position are left out. The table's ``anomaly_score_sigma`` is used when present, else it is computed
    from ``anomaly_score`` over the map's points."""
    need = {"image_id", "umap_x", "umap_y"}
    if not need <= set(umap.columns):
        raise ValueError(f"the latent map frame lacks {sorted(need - set(umap.columns))} (has {list(umap.columns)})")
    pts = umap.copy()
    pts["image_id"] = pts["image_id"].astype(str)
    if "batch" not in pts.columns:
        pts["batch"] = None
    pts = pts[np.isfinite(pts["umap_x"].to_numpy(float)) & np.isfinite(pts["umap_y"].to_numpy(float))]
    pts = pts.drop_duplicates("image_id")[["image_id", "batch", "umap_x", "umap_y"]]
    if table is not None and len(table):
        info = table.copy()
        info["image_id"] = info["image_id"].astype(str)
        keep = [c for c in TABLE_COLUMNS if c in info.columns]
        pts = pts.merge(info.drop_duplicates("image_id")[["image_id", *keep]], on="image_id", how="left")
    for col in TABLE_COLUMNS:
        if col not in pts.columns:
            pts[col] = np.nan
    a = pd.to_numeric(pts["anomaly_score"], errors="coerce").to_numpy(float)
    sig = pd.to_numeric(pts["anomaly_score_sigma"], errors="coerce").to_numpy(float)
    if not np.isfinite(sig).any() and np.isfinite(a).sum() > 1 and np.nanstd(a) > 0:
        pts["anomaly_score_sigma"] = (a - np.nanmean(a)) / np.nanstd(a)
    return pts.reset_index(drop=True)


def _hex(rgb: np.ndarray) -> list[str]:
    rgb = np.clip(np.round(np.asarray(rgb)[:, :3] * 255), 0, 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def _continuous(values: np.ndarray, cmap: str, lo: float, hi: float) -> list[str]:
    from matplotlib import colormaps

    ok = np.isfinite(values)
    t = np.clip((np.where(ok, values, lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    colours = _hex(colormaps[cmap](t))
    return [c if good else NONE_COLOUR for c, good in zip(colours, ok)]


def _gradient_key(cmap: str, lo: float, hi: float, label: str, extra: str = "") -> str:
    from matplotlib import colormaps

    stops = ", ".join(_hex(colormaps[cmap](np.linspace(0, 1, 9))))
    return (f'<div style="font:12px sans-serif"><b>{html.escape(label)}</b><br>'
            f'<span>{lo:.2f}</span> <span style="display:inline-block;width:180px;height:10px;'
            f'background:linear-gradient(to right, {stops});vertical-align:middle"></span> <span>{hi:.2f}</span>'
            f'{"<br>" + html.escape(extra) if extra else ""}</div>')


def colour_columns(points: pd.DataFrame, min_shown: int = 3, max_tags: int = 9
                   ) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """Each point's colour under each colouring (keys: ``COLOUR_OPTIONS``' columns), the HTML colour key of each
    (keys: the option labels) and the option labels as shown. Anomaly: viridis over the 1st-99th percentile of
    the sigma score; fraction: plasma from 0 to its 99th percentile, grey where the image was shown fewer than
    ``min_shown`` times; hashtag: the ``max_tags`` most common top tags, the rest "other", grey without one."""
    n = len(points)
    cols: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    labels = list(COLOUR_OPTIONS)

    sig = pd.to_numeric(points["anomaly_score_sigma"], errors="coerce").to_numpy(float)
    if np.isfinite(sig).any():
        lo, hi = np.nanpercentile(sig, [1, 99])
        cols["c_anomaly"] = _continuous(sig, "viridis", float(lo), float(hi))
        keys["anomaly score"] = _gradient_key("viridis", float(lo), float(hi),
                                              "anomaly score (sigma), 1st-99th percentile",
                                              "values beyond take the end colours")
    else:
        cols["c_anomaly"] = [NONE_COLOUR] * n
        keys["anomaly score"] = '<div style="font:12px sans-serif">no anomaly scores for these images</div>'

    frac = pd.to_numeric(points["fraction"], errors="coerce").to_numpy(float)
    shown = pd.to_numeric(points["shown"], errors="coerce").to_numpy(float)
    frac = np.where(np.nan_to_num(shown, nan=0.0) >= min_shown, frac, np.nan)
    if np.isfinite(frac).any():
        hi = max(0.05, float(np.nanpercentile(frac, 99)))
        cols["c_fraction"] = _continuous(frac, "plasma", 0.0, hi)
        keys["volunteer fraction"] = _gradient_key(
            "plasma", 0.0, hi, "volunteer fraction (selected / shown)",
            f"grey: shown fewer than {min_shown} times ({int((~np.isfinite(frac)).sum())} images)")
    else:
        cols["c_fraction"] = [NONE_COLOUR] * n
        keys["volunteer fraction"] = (f'<div style="font:12px sans-serif">no image was shown to volunteers '
                                      f'{min_shown} times or more</div>')

    tags = points["top_tag"].where(points["top_tag"].notna(), None).astype(object)
    tags = [str(t) if t is not None and str(t) != "" and not (isinstance(t, float) and np.isnan(t)) else None
            for t in tags]
    counts = pd.Series([t for t in tags if t is not None], dtype=object).value_counts()
    if len(counts):
        top = list(counts.index[:max_tags])
        colour_of = {t: TAG_PALETTE[i % len(TAG_PALETTE)] for i, t in enumerate(top)}
        other = "#444444"
        cols["c_tag"] = [NONE_COLOUR if t is None else colour_of.get(t, other) for t in tags]
        rows = [(colour_of[t], f"#{t}", int(counts[t])) for t in top]
        if len(counts) > len(top):
            rows.append((other, f"other ({len(counts) - len(top)} tags)", int(counts.iloc[len(top):].sum())))
        rows.append((NONE_COLOUR, "no hashtag", sum(t is None for t in tags)))
        keys["top hashtag"] = ('<div style="font:12px sans-serif"><b>top Talk hashtag (images)</b><br>' + "".join(
            f'<span style="display:inline-block;width:10px;height:10px;background:{c}"></span> '
            f'{html.escape(name)} ({k})<br>' for c, name, k in rows) + "</div>")
    else:
        labels[2] = "top hashtag (none)"
        cols["c_tag"] = [NONE_COLOUR] * n
        keys[labels[2]] = ('<div style="font:12px sans-serif"><b>top hashtag: none</b><br>the Talk consensus has '
                           'no hashtag for these images</div>')
    return cols, keys, labels


def detail_order(points: pd.DataFrame) -> np.ndarray:
    """Row numbers of ``points`` in the order their detail images are kept: the most anomalous image, the one the
    volunteers chose most (by the Wilson interval's lower end, else the fraction), the next most anomalous, and so
    on (each image once); images with neither number come last, in map order."""
    n = len(points)
    sig = pd.to_numeric(points["anomaly_score_sigma"], errors="coerce").to_numpy(float)
    vol = pd.to_numeric(points["ci_low"], errors="coerce").to_numpy(float)
    if not np.isfinite(vol).any():
        vol = pd.to_numeric(points["fraction"], errors="coerce").to_numpy(float)
    by_sig = [i for i in np.argsort(-np.nan_to_num(sig, nan=-np.inf), kind="stable") if np.isfinite(sig[i])]
    by_vol = [i for i in np.argsort(-np.nan_to_num(vol, nan=-np.inf), kind="stable") if np.isfinite(vol[i])]
    seen: set[int] = set()
    out: list[int] = []
    for pair in zip(by_sig + [None] * max(0, len(by_vol) - len(by_sig)),
                    by_vol + [None] * max(0, len(by_sig) - len(by_vol))):
        for i in pair:
            if i is not None and int(i) not in seen:
                seen.add(int(i))
                out.append(int(i))
    out += [i for i in range(n) if i not in seen]
    return np.asarray(out, dtype=int)


# --------------------------------------------------------------------------------------------- the images
def _webp_uri(rgb_hwc: np.ndarray, quality: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_hwc, dtype=np.uint8)).save(buf, "WEBP", quality=quality, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(image: np.ndarray, size: int = 48, quality: int = 70) -> str:
    """A uint8 (3, H, W) cutout as a ``size``-pixel WebP ``data:`` URI (about 1 kB at 48 px)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(1, 2, 0)))
    return _webp_uri(np.asarray(img.resize((size, size), Image.Resampling.LANCZOS)), quality)


def _residual_rgb(residual: np.ndarray, limit: float = RESIDUAL_LIMIT) -> np.ndarray:
    from matplotlib import colormaps

    t = np.clip((np.nan_to_num(np.asarray(residual, float)) + limit) / (2 * limit), 0, 1)
    return np.round(colormaps["RdBu_r"](t)[..., :3] * 255).astype(np.uint8)


def detail_uri(image: np.ndarray, reconstruction: np.ndarray | None = None, residual: np.ndarray | None = None,
               quality: int = 60) -> str:
    """The click's image as a WebP ``data:`` URI: the uint8 (3, H, W) cutout, then (when given) the model's uint8
    reconstruction and the (H, W) residual in noise sigmas (RdBu, -5 to +5: red where the image is brighter than
    the model), side by side with 2-pixel gaps."""
    panels = [np.asarray(image, dtype=np.uint8).transpose(1, 2, 0)]
    if reconstruction is not None:
        panels.append(np.asarray(reconstruction, dtype=np.uint8).transpose(1, 2, 0))
    if residual is not None:
        panels.append(_residual_rgb(residual))
    h = panels[0].shape[0]
    gap = np.full((h, 2, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    return _webp_uri(np.concatenate(row, axis=1), quality)


def reconstructions(model_dir: str | Path, images: np.ndarray, noise: np.ndarray, device="cpu",
                    batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The model's noise-free reconstructions G(E(x)) (uint8 (N, 3, H, W)) and the residuals in units of the pixel
    noise, summed over the channels / sqrt(3) ((N, H, W)), of uint8 ``images`` with sky ``noise`` (N, 3; rows
    that are not finite are estimated from the image). The expected observation is the one the scores read
    (``WGAN.expected``'s default, ~8x faster on a CPU than the exact integral the ``wgan`` asset's figures use, and
    within a few percent of it); a model without an observation model is read against the image's own noise."""
    import torch

    from ww_assets.model.checkpoints import load_wgan
    from ww_assets.model.data import fill_missing_noise
    from ww_assets.model.observation import noise_variance
    from ww_assets.scores.residuals import noise_units

    wgan = load_wgan(model_dir, device=device)
    noise = fill_missing_noise(np.asarray(noise, np.float32), images)
    rgbs, maps = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[start:start + batch_size], np.uint8)).to(wgan.device).float() / 255
            s = torch.as_tensor(noise[start:start + batch_size], dtype=torch.float32, device=wgan.device)
            g = wgan.generator(wgan.encoder(x))
            mean, var = wgan.expected(g, s)
            var = noise_variance(x, s) if var is None else var
            maps.append((noise_units(x, mean.float(), var).sum(1) / np.sqrt(3)).cpu().numpy())
            rgbs.append((wgan.rgb(g).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    if not rgbs:
        h = w = images.shape[-1] if np.ndim(images) == 4 else 0
        return np.zeros((0, 3, h, w), np.uint8), np.zeros((0, h, w), np.float32)
    return np.concatenate(rgbs), np.concatenate(maps)


# --------------------------------------------------------------------------------------------- the page
_HOVER = """
<div style="width:270px;font:12px sans-serif">
  <img src="@thumb" alt="" width="64" height="64" style="float:left;margin:0 6px 4px 0;image-rendering:pixelated">
  <b>@image_id</b><br>anomaly @anom_text<br>volunteers @vol_text<br>hashtag @tag_text<br>@radec
</div>
"""

_TAP_JS = """
const i = source.selected.indices.length ? source.selected.indices[0] : null;
if (i === null) { panel.text = intro; return; }
const d = source.data;
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
                                                          '"': '&quot;', "'": '&#39;'}[c]));
let img;
if (d.detail[i]) {
  img = '<img class="ww-detail" src="' + d.detail[i] + '" style="width:100%;image-rendering:pixelated">' +
        '<div style="color:#555">' + esc(d.detail_caption[i]) + '</div>';
} else if (d.thumb[i]) {
  img = '<img class="ww-detail" src="' + d.thumb[i] + '" style="width:50%;image-rendering:pixelated">' +
        '<div style="color:#555">' + esc(no_detail) + '</div>';
} else {
  img = '<div style="color:#555">no cutout written for this image</div>';
}
const link = d.viewer[i] ? '<a href="' + esc(d.viewer[i]) + '" target="_blank" rel="noopener">' +
                           esc(viewer_name) + '</a>' : 'no sky position, no survey-viewer link';
panel.text = '<div style="font:13px sans-serif"><b>' + esc(d.image_id[i]) + '</b> (batch ' + esc(d.batch[i]) +
  ')<br>' + img + '<p>anomaly ' + esc(d.anom_text[i]) + '<br>volunteers ' + esc(d.vol_text[i]) +
  '<br>hashtag ' + esc(d.tag_text[i]) + '<br>' + esc(d.radec[i]) + '</p><p>' + link + '</p></div>';
"""

_SELECT_JS = """
const col = columns[select.value];
source.data.color = Array.from(source.data[col]);
source.change.emit();
key.text = keys[select.value];
"""


def _texts(points: pd.DataFrame) -> dict[str, list[str]]:
    def num(col):
        return pd.to_numeric(points[col], errors="coerce").to_numpy(float)

    sig, frac, k, n = num("anomaly_score_sigma"), num("fraction"), num("selected"), num("shown")
    lo, hi = num("ci_low"), num("ci_high")
    anom = [f"{s:+.2f}\u03c3" if np.isfinite(s) else "no score" for s in sig]
    vol = []
    for f, kk, nn, a, b in zip(frac, k, n, lo, hi):
        if not np.isfinite(f):
            vol.append("not shown to volunteers" if not (np.isfinite(nn) and nn > 0) else "no fraction")
            continue
        text = f"{int(kk)}/{int(nn)} = {f:.2f}" if np.isfinite(kk) and np.isfinite(nn) else f"{f:.2f}"
        vol.append(text + (f" (95% [{a:.2f}, {b:.2f}])" if np.isfinite(a) and np.isfinite(b) else ""))
    tags = []
    for t, share in zip(points["top_tag"], num("top_tag_share")):
        if t is None or (isinstance(t, float) and np.isnan(t)) or str(t) == "":
            tags.append("none")
        else:
            tags.append(f"#{t}" + (f" ({share:.0%} of tags)" if np.isfinite(share) else ""))
    radec = [format_radec(r, d) for r, d in zip(points["ra"], points["dec"])]
    viewer = [survey_viewer_url(r, d) or "" for r, d in zip(points["ra"], points["dec"])]
    return {"anom_text": anom, "vol_text": vol, "tag_text": tags, "radec": radec, "viewer": viewer}


def write_latent_map_page(points: pd.DataFrame, path: str | Path, thumbnails: Sequence[str | None] | None = None,
                          details: Sequence[str | None] | None = None, *, detail_caption: str = "",
                          no_detail: str = "", title: str | None = None, min_shown: int = 3, max_tags: int = 9,
                          notes: Sequence[str] = ()) -> LatentMapPage:
    """Write the interactive map of ``points`` (``map_points``' frame) to ``path`` atomically: one HTML file,
    Bokeh inlined. ``thumbnails`` / ``details``: per point (same order), a ``data:`` URI or None (no cutout / no
    detail image); ``detail_caption`` says what a detail image shows, ``no_detail`` what a click on a point
    without one shows; ``notes`` are printed under the title (what is missing, and why)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, Select, TapTool
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    n = len(points)
    thumbnails = list(thumbnails) if thumbnails is not None else [None] * n
    details = list(details) if details is not None else [None] * n
    if len(thumbnails) != n or len(details) != n:
        raise ValueError(f"{n} points but {len(thumbnails)} thumbnails and {len(details)} details")
    for uri in (*thumbnails, *details):
        if uri and not str(uri).startswith("data:image/"):
            raise ValueError(f"images must be data: URIs so the page works offline; got {str(uri)[:40]!r}")
    colours, keys, labels = colour_columns(points, min_shown, max_tags)
    data = {"image_id": points["image_id"].astype(str).tolist(),
            "batch": points["batch"].where(points["batch"].notna(), "").astype(str).tolist(),
            "umap_x": points["umap_x"].to_numpy(float), "umap_y": points["umap_y"].to_numpy(float),
            "thumb": [t or "" for t in thumbnails], "detail": [d or "" for d in details],
            "detail_caption": [detail_caption if d else "" for d in details],
            **_texts(points), **colours, "color": list(colours["c_anomaly"])}
    source = ColumnDataSource(data, name="latent_points_source")
    title = title or f"Latent map of {n} images (UMAP of the encoder's latent vectors)"
    fig = figure(width=760, height=680, title=title, tools="pan,wheel_zoom,box_zoom,reset,save",
                 active_scroll="wheel_zoom", x_axis_label="UMAP 1 (arbitrary units)",
                 y_axis_label="UMAP 2 (arbitrary units)", output_backend="canvas")
    points_renderer = fig.scatter("umap_x", "umap_y", source=source, size=7, fill_color="color", line_color=None,
                                  fill_alpha=0.85, name=POINTS_NAME, selection_line_color="black",
                                  nonselection_fill_alpha=0.35)
    fig.add_tools(HoverTool(renderers=[points_renderer], tooltips=_HOVER),
                  TapTool(renderers=[points_renderer]))
    column_of = {label: col for label, col in zip(labels, COLOUR_OPTIONS.values())}
    select = Select(title="colour by", value=labels[0], options=labels, name=SELECT_NAME, width=240)
    key = Div(text=keys[labels[0]], name=LEGEND_NAME, width=420)
    select.js_on_change("value", CustomJS(args={"source": source, "select": select, "key": key,
                                                "columns": column_of, "keys": keys}, code=_SELECT_JS))
    intro = ('<div style="font:13px sans-serif;color:#555">Hover a point to see the image; click it to see the '
             "image beside the model's reconstruction and its residual map, with a link to the survey viewer.</div>")
    panel = Div(text=intro, name=PANEL_NAME, width=340)
    source.selected.js_on_change("indices", CustomJS(
        args={"source": source, "panel": panel, "intro": intro, "no_detail": no_detail,
              "viewer_name": SURVEY_VIEWER}, code=_TAP_JS))
    note_div = Div(text="".join(f'<div style="font:12px sans-serif;color:#a33">{html.escape(t)}</div>'
                                for t in notes), width=760)
    layout = row(column(note_div, row(select, key), fig), panel)
    page = file_html(layout, resources=INLINE, title=title)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return LatentMapPage(path=path, n_points=n, n_thumbnails=sum(bool(t) for t in thumbnails),
                         n_details=sum(bool(d) for d in details), n_residual_maps=0,
                         page_bytes=path.stat().st_size, colour_options=labels, notes=list(notes))


# --------------------------------------------------------------------------------------------- from storage
def _noise_of(layout: StorageLayout, points: pd.DataFrame) -> np.ndarray:
    from ww_assets.model.data import catalog_noise

    out = np.full((len(points), 3), np.nan, np.float32)
    for batch in points["batch"].dropna().astype(str).unique():
        path = layout.catalog_file(batch)
        if not path.exists():
            continue
        cat = pd.read_parquet(path)
        noise = catalog_noise(cat)
        row_of = dict(zip(cat["image_id"].astype(str), range(len(cat))))
        for i in np.flatnonzero((points["batch"].astype(str) == batch).to_numpy()):
            j = row_of.get(str(points["image_id"].iloc[i]))
            if j is not None:
                out[i] = noise[j]
    return out


def build_latent_map_page(layout: StorageLayout, path: str | Path | None = None, *, thumb_px: int = 48,
                          max_details: int = 500, residual_maps: bool = True, device="cpu", min_shown: int = 3,
                          max_tags: int = 9, log: Callable[[str], None] | None = None) -> LatentMapPage:
    """The page from what a storage root holds: the newest ``latent_umap``, the image table of
    ``consensus_vs_score`` (optional: without it the map has no volunteer or hashtag colouring), the cutouts
    and, for the residual maps, the model in ``layout.model_dir`` (without one, details show the image alone and
    the page says so). Written to ``path`` (default ``layout.analysis_file("latent_map_page")``)."""
    from ww_assets.images.store import CutoutStore
    from ww_assets.plotting.sky import positions

    say = log or (lambda _msg: None)
    umap_path = layout.analysis_file("latent_umap")
    if not umap_path.exists():
        raise FileNotFoundError(f"{umap_path} is missing: materialise latent_umap first")
    table_path = layout.analysis_file("image_table")
    notes: list[str] = []
    table = pd.read_parquet(table_path) if table_path.exists() else None
    if table is None:
        notes.append(f"{table_path} is missing (materialise consensus_vs_score): no volunteer or hashtag colours")
    points = positions(layout, map_points(pd.read_parquet(umap_path), table))
    n = len(points)
    store = CutoutStore(layout)
    cutouts = [store.get(b, i) if isinstance(b, str) and b else None
               for b, i in zip(points["batch"], points["image_id"])]
    thumbs = [thumbnail_uri(c, thumb_px) if c is not None else None for c in cutouts]
    missing = sum(c is None for c in cutouts)
    if missing:
        notes.append(f"{missing} of {n} images have no cutout written (no thumbnail)")
    order = [i for i in detail_order(points) if cutouts[i] is not None][:max(0, max_details)]
    if len(order) < n - missing:
        notes.append(f"detail images for {len(order)} of {n - missing} images (the most anomalous and the "
                     f"volunteers' favourites in turn; max_details = {max_details})")
    recon = resid = None
    n_resid = 0
    if order and residual_maps:
        if layout.model_dir.exists():
            imgs = np.stack([cutouts[i] for i in order])
            recon, resid = reconstructions(layout.model_dir, imgs, _noise_of(layout, points.iloc[order]),
                                           device=device)
            n_resid = len(order)
            say(f"reconstructed {n_resid} images for their residual maps with the model in {layout.model_dir}")
        else:
            notes.append(f"no model at {layout.model_dir} (materialise wgan): details show the image alone")
    details: list[str | None] = [None] * n
    for k, i in enumerate(order):
        details[i] = detail_uri(cutouts[i], None if recon is None else recon[k], None if resid is None else resid[k])
    caption = ("left: the image; middle: the model's reconstruction G(E(x)); right: the residual in noise sigmas "
               f"(-{RESIDUAL_LIMIT:g} blue to +{RESIDUAL_LIMIT:g} red, red where the image is brighter)"
               if recon is not None else "the image (no residual map: no model)")
    no_detail = (f"no detail image embedded for this point: the page carries {len(order)} (the most anomalous and "
                 "the volunteers' favourites); raise max_details for more")
    page = write_latent_map_page(points, path or layout.analysis_file("latent_map_page"), thumbs, details,
                                 detail_caption=caption, no_detail=no_detail, min_shown=min_shown,
                                 max_tags=max_tags, notes=notes)
    page.n_residual_maps = n_resid
    for note in notes:
        say(note)
    return page

