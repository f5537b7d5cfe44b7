"""Tests of the zooniverse stage."""
