"""Small helpers that turn files, numbers and frames into Dagster metadata the UI shows well, and cheaply.

What Dagster 1.13's UI does with each kind (``ui-core/src/metadata/MetadataEntry.tsx``), and so what is used here:

* Markdown under 1,000 characters is rendered inline in the asset's metadata table; longer Markdown hides behind a
  "[Show Markdown]" link that opens a dialog. A figure is therefore shown as a *thumbnail* small enough to stay
  inline (a WebP data URI, sized to fit; about 0.6 kB), with the full PNG's path beside it (``png_markdown``).
  Full-size PNGs are never embedded: each one would be stored in the instance database with every
  materialisation (twice: the event and the asset's latest-materialisation record).
* Ints and floats are plotted by the UI across materialisations ("Plots" tab): keep numbers as numbers
  (``numeric_metadata`` flattens a nested summary into them instead of a JSON blob).
* ``MetadataValue.table`` with a ``TableSchema`` is drawn as a sortable table with typed columns
  (``table_metadata``); ``MetadataValue.path`` is a path with a copy button.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any, Mapping

import dagster as dg

__all__ = [
    "INLINE_MARKDOWN_LIMIT", "figure_metadata", "numeric_metadata", "png_markdown", "table_markdown",
    "table_metadata", "table_schema", "thumbnail_data_uri",
]

#: Markdown metadata shorter than this is rendered inline by the Dagster UI (1.13); longer is behind a click
INLINE_MARKDOWN_LIMIT = 1000
#: thumbnail sizes tried, largest first (pixels wide), and WebP qualities at each
_WIDTHS = (224, 200, 176, 160, 144, 128, 112, 96, 80, 64)
_QUALITIES = (50, 30, 15, 5)


def thumbnail_data_uri(path: str | Path, max_chars: int) -> tuple[str, tuple[int, int]]:
    """The image at ``path`` as a WebP ``data:`` URI of at most ``max_chars`` characters: the widest thumbnail
    (and, at that width, the best quality) that fits. Returns the URI and the thumbnail's (width, height)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w0, h0 = im.size
        uri, size = "", (0, 0)
        for width in _WIDTHS:
            if width > w0:
                continue
            height = max(1, round(h0 * width / w0))
            small = im.resize((width, height), Image.LANCZOS)
            for quality in _QUALITIES:
                buf = io.BytesIO()
                small.save(buf, "WEBP", quality=quality, method=6)
                uri = "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                size = (width, height)
                if len(uri) <= max_chars:
                    return uri, size
    return uri, size  # nothing fitted: the smallest tried (the caller shows it behind a click)


def png_markdown(path: str | Path, alt: str = "plot") -> dg.MetadataValue:
    """A figure in asset metadata, shown inline in the Dagster UI: a small thumbnail of the PNG and, under it, the
    full PNG's path (the figure itself stays a file; nothing large enters the instance database).

    The Markdown is kept under ``INLINE_MARKDOWN_LIMIT`` characters, the length the UI renders inline.
    """
    path = Path(path)
    alt = str(alt).replace("[", "(").replace("]", ")")
    tail = f"  \nfull figure: `{path}`"
    budget = INLINE_MARKDOWN_LIMIT - 1 - len(f"![{alt}]()") - len(tail)
    if budget < 400:  # a very long path: keep the thumbnail and name only the file
        tail = f"  \nfull figure: `{path.name}`"
        budget = INLINE_MARKDOWN_LIMIT - 1 - len(f"![{alt}]()") - len(tail)
    uri, _ = thumbnail_data_uri(path, budget)
    return dg.MetadataValue.md(f"![{alt}]({uri}){tail}")


def figure_metadata(name: str, path: str | Path, alt: str | None = None) -> dict[str, dg.MetadataValue]:
    """``{name: thumbnail (png_markdown), name + "_file": the PNG's path}``: a figure as two metadata entries,
    the second a path with the UI's copy button."""
    return {name: png_markdown(path, alt or name), f"{name}_file": dg.MetadataValue.path(str(path))}


def _number(value: Any) -> dg.MetadataValue | None:
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return dg.MetadataValue.bool(bool(value))
    if isinstance(value, (int, np.integer)):
        return dg.MetadataValue.int(int(value))
    if isinstance(value, (float, np.floating)):
        return dg.MetadataValue.float(float(value)) if math.isfinite(float(value)) else None
    return None


def numeric_metadata(values: Mapping[str, Any], prefix: str = "", sep: str = "/", digits: int | None = 6
                     ) -> dict[str, dg.MetadataValue]:
    """A nested summary (dicts of numbers) as flat numeric metadata the UI charts across runs:
    ``{"anomaly_score": {"p50": 1.2}}`` -> ``{"anomaly_score/p50": MetadataValue.float(1.2)}``.

    Ints stay ints, floats are rounded to ``digits`` significant digits, bools stay bools; non-finite numbers and
    anything that is not a number (strings, lists) are left out.
    """
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(numeric_metadata(value, name, sep, digits))
            continue
        mv = _number(value)
        if mv is None:
            continue
        if digits is not None and isinstance(mv.value, float) and mv.value != 0:
            mv = dg.MetadataValue.float(float(f"{mv.value:.{digits}g}"))
        out[name] = mv
    return out


def _column_type(dtype) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def table_schema(frame, descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    """The frame's columns as a Dagster ``TableSchema`` (int, float, bool, datetime or string), with optional
    per-column descriptions."""
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(str(c), _column_type(frame[c].dtype), description=descriptions.get(str(c)))
        for c in frame.columns])


def _cell(value: Any, kind: str, digits: int | None):
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        v = float(value)
        return round(v, digits) if digits is not None else v
    if kind == "bool":
        return bool(value)
    return str(value)


def table_metadata(frame, max_rows: int = 20, digits: int | None = 4,
                   descriptions: Mapping[str, str] | None = None) -> dg.MetadataValue:
    """The first ``max_rows`` rows of a pandas frame as a typed table (``MetadataValue.table`` with its
    ``TableSchema``): the UI draws it as a table with column types, not as text."""
    head = frame.head(max_rows)
    schema = table_schema(head, descriptions)
    kinds = {c.name: c.type for c in schema.columns}
    records = [dg.TableRecord({str(c): _cell(v, kinds[str(c)], digits) for c, v in row.items()})
               for _, row in head.iterrows()]
    return dg.MetadataValue.table(records=records, schema=schema)


def table_markdown(frame, max_rows: int = 20) -> dg.MetadataValue:
    """A small preview of a pandas frame as a Markdown table (inline in the UI under 1,000 characters, behind
    "[Show Markdown]" above; ``table_metadata`` gives a typed table instead)."""
    return dg.MetadataValue.md(frame.head(max_rows).to_markdown(index=False) if hasattr(frame, "to_markdown")
                               else str(frame.head(max_rows)))
