"""The code location: every asset group's definitions merged, plus the shared resources.

Loaded by ``dagster dev`` through workspace.yaml and by ``dagster asset materialize -m ww_assets.definitions``.
"""

from __future__ import annotations

import dagster as dg

from ww_assets.defs import analysis, consensus, images, model, operations, scores, zooniverse
from ww_assets.defs.resources import shared_resources

defs = dg.Definitions.merge(
    zooniverse.defs,
    consensus.defs,
    images.defs,
    model.defs,
    scores.defs,
    analysis.defs,
    operations.defs,
    dg.Definitions(resources=shared_resources()),
)
