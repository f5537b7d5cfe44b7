"""The slow operations tests: real servers, kills, faults, the browser, PostgreSQL."""
