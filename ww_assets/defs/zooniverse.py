"""Dagster layer for the 'zooniverse' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
