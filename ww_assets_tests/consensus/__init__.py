"""Tests of the consensus stage."""
