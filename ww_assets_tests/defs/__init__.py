"""Materialisation tests: the Dagster layer with real resources on a temporary storage root and instance."""
