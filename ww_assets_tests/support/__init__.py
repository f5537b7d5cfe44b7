"""Helpers shared by the tests: the loopback Zooniverse server and the operations-test additions."""
