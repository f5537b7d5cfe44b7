"""Tests of the model stage."""
