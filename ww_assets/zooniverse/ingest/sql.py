"""SQL text the ingest statements are built from: literals, integer parsing and checks, JSON fields, timestamps.

Only constants of this package and file paths are spliced into SQL text this way; volunteer data and the pseudonym
key are always bound parameters (DuckDB may echo SQL text in errors and plans).
"""

from __future__ import annotations

from typing import Iterable

from ww_assets.zooniverse import formats

__all__ = ["lit", "sql_list", "column", "to_bigint", "is_int_or_empty", "json_field",
           "PANOPTES_FIRST_TIMES", "ISO_FIRST_TIMES"]


def lit(text: object) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_list(items: Iterable[object]) -> str:
    """A SQL list of string literals, e.g. ``['a', 'b']``."""
    return "[" + ", ".join(lit(item) for item in items) + "]"


def column(header: list[str], name: str) -> str:
    """A column of the CSV, or a typed NULL when the export has no such column (older exports lack some)."""
    return f'"{name}"' if name in header else "NULL::VARCHAR"


def to_bigint(text_sql: str) -> str:
    """SQL: the BIGINT in a VARCHAR expression, NULL when empty or not an integer."""
    return f"try_cast(nullif(trim({text_sql}), '') AS BIGINT)"


def is_int_or_empty(text_sql: str) -> str:
    """SQL: true when a VARCHAR expression is NULL, empty, or a plain integer (not '12.0', '0012' or '12ab')."""
    return (f"(nullif(trim({text_sql}), '') IS NULL OR "
            f"try_cast(trim({text_sql}) AS BIGINT)::VARCHAR IS NOT DISTINCT FROM trim({text_sql}))")


def json_field(field: str) -> str:
    """SQL: a top-level field of the JSON value ``json`` (a row of ``read_json_objects``) as text."""
    return f"json->>{lit('$.' + field)}"


#: Timestamp formats for try_strptime: Panoptes CSV formats first (CSV exports), or ISO first (Talk JSON).
PANOPTES_FIRST_TIMES = sql_list(formats.PANOPTES_TIME_FORMATS + formats.ISO_TIME_FORMATS)
ISO_FIRST_TIMES = sql_list(formats.ISO_TIME_FORMATS + formats.PANOPTES_TIME_FORMATS)
