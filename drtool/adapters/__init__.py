"""The only modules that import an SDK or run an external program: one per outside system."""
