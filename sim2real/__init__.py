"""sim2real: turn cheap simulator data into realistic robot-learning data."""

__version__ = "0.1.0"
