"""Dagster layer for the 'consensus' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
