"""consensus stage."""
