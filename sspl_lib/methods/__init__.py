"""Training methods on the shared SSPL streams: one module each, behind `base.Method`; by name in `registry`."""
