"""Dagster layer for the 'images' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
