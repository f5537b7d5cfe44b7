"""Dagster layer for the 'scores' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
