"""Small helpers that turn files and frames into Dagster metadata the UI shows well."""

import base64
from pathlib import Path

import dagster as dg


def png_markdown(path: str | Path, alt: str = "plot") -> dg.MetadataValue:
    """Embed a PNG in asset metadata so the plot shows in the Dagster UI (Markdown with a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def table_markdown(frame, max_rows: int = 20) -> dg.MetadataValue:
    """A small preview of a pandas frame as a Markdown table."""
    return dg.MetadataValue.md(frame.head(max_rows).to_markdown(index=False) if hasattr(frame, "to_markdown")
                               else str(frame.head(max_rows)))

