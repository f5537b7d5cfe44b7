"""Dagster layer for the 'model' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
