"""Dagster layer for the 'analysis' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
