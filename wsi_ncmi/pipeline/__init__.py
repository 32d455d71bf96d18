"""All stages in one command: `run` from a pipeline config, and `demo` on built-in synthetic data."""
