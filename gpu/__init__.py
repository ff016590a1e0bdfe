"""GPU workers: inference and training consumer groups."""
