"""Brains that phrase the agent's reply: `OfflineBrain` (deterministic, no network) and `OpenAIBrain`."""
