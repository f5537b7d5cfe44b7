"""Tests of the simulation stage."""
