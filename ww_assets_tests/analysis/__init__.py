"""Tests of the analysis stage."""
