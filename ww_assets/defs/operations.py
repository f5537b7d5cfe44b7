"""Dagster layer for the 'operations' group (placeholder until its issue lands)."""

import dagster as dg

defs = dg.Definitions()
