"""Where processes come from: local spawn (tests, one machine) or Ray Train (clusters)."""
