"""plotting stage."""
