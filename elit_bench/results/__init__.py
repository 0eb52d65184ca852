"""Results: records -> tables (paper layout, ours beside published), figures and leaderboards."""
