"""Suites: named experiment definitions (YAML), their expansion into runs, the runner and launchers."""
