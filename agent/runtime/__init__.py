"""Runtime drivers: how the agent runs an instance (`process`: real; `fake`: simulated)."""
