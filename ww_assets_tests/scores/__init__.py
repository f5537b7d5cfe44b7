"""Tests of the scores stage."""
