"""Tests of the images stage."""
