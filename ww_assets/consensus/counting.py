"""Which classifications the consensus counts: the counting rules, and the one view every consensus build reads.

A project's export pools every workflow, every version and every kind of row; a team usually wants one workflow,
from the version where the task took its final form, and may want to leave out (or look only at) the rows the
export flags ``gold_standard`` or ``expert``. The rules come from the environment (``WW_CONSENSUS_WORKFLOW_ID``,
``WW_CONSENSUS_MIN_WORKFLOW_VERSION``, ``WW_CONSENSUS_GOLD_STANDARD``, ``WW_CONSENSUS_EXPERT``; default: count
everything) and are applied
in one place, the view ``consensus.counted_classifications`` over ``raw.classifications``. ``raw`` keeps every row,
so changing a rule loses nothing: the rules are part of each consensus table's version marker, and the next build
after a change is a full one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ww_assets import settings

__all__ = ["COUNTED", "CountingRules", "current_rules", "ensure_counted_view"]

#: the classifications the consensus counts (a view: the rules applied to raw.classifications)
COUNTED = "consensus.counted_classifications"


@dataclasses.dataclass(frozen=True)
class CountingRules:
    """``workflow_id``: only that workflow (None: all). ``min_workflow_version``: 'major' or 'major.minor'; only
    classifications made with that version or later, compared as numbers (160.317 > 160.32; None: all).
    ``gold_standard`` / ``expert``: include (default), exclude or only the rows the export flags so; a row from an
    export without the column is not flagged."""

    workflow_id: int | None = None
    min_workflow_version: str | None = None
    gold_standard: str = "include"
    expert: str = "include"

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> "CountingRules":
        return cls(settings.get("WW_CONSENSUS_WORKFLOW_ID", environ),
                   settings.get("WW_CONSENSUS_MIN_WORKFLOW_VERSION", environ),
                   settings.get("WW_CONSENSUS_GOLD_STANDARD", environ), settings.get("WW_CONSENSUS_EXPERT", environ))

    def where_sql(self) -> str:
        """The rules as an SQL condition on raw.classifications ('TRUE' when everything counts)."""
        parts = []
        if self.workflow_id is not None:
            parts.append(f"workflow_id = {int(self.workflow_id)}")
        if self.min_workflow_version:
            major, _, minor = settings.check_value("WW_CONSENSUS_MIN_WORKFLOW_VERSION",
                                                   self.min_workflow_version).partition(".")
            v_major = "try_cast(split_part(workflow_version, '.', 1) AS BIGINT)"
            v_minor = "coalesce(try_cast(nullif(split_part(workflow_version, '.', 2), '') AS BIGINT), 0)"
            # a row without a readable version is not known to be recent enough: not counted
            parts.append(f"({v_major} > {int(major)} OR ({v_major} = {int(major)} AND {v_minor} >= {int(minor or 0)}))")
        for flag, variable in (("gold_standard", "WW_CONSENSUS_GOLD_STANDARD"), ("expert", "WW_CONSENSUS_EXPERT")):
            choice = settings.check_value(variable, getattr(self, flag))
            if choice != "include":
                parts.append(f"coalesce({flag}, false) = {'true' if choice == 'only' else 'false'}")
        return " AND ".join(parts) or "TRUE"

    def marker(self) -> str:
        """What a consensus table records about the rules it was built with."""
        return (f"workflow={self.workflow_id or 'all'};min_version={self.min_workflow_version or 'any'};"
                f"gold_standard={self.gold_standard};expert={self.expert}")

    def describe(self) -> str:
        """For people: 'every classification', or which ones."""
        parts = ([f"workflow {self.workflow_id}"] if self.workflow_id is not None else []) + \
            ([f"workflow version >= {self.min_workflow_version}"] if self.min_workflow_version else []) + \
            [f"{'no' if getattr(self, f) == 'exclude' else 'only'} {f.replace('_', '-')} rows"
             for f in ("gold_standard", "expert") if getattr(self, f) != "include"]
        return ", ".join(parts) or "every classification"


def current_rules() -> CountingRules:
    """The rules the environment sets now."""
    return CountingRules.from_settings()


def ensure_counted_view(con, rules: CountingRules | None = None) -> None:
    """(Re)create ``consensus.counted_classifications`` for ``rules`` (default: :func:`current_rules`)."""
    rules = rules or current_rules()
    con.execute(f"CREATE OR REPLACE VIEW {COUNTED} AS SELECT * FROM raw.classifications WHERE {rules.where_sql()}")
