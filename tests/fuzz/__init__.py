"""Differential fuzzing of gradc: random graphs over the op registry, native vs interpreter vs eager vs PyTorch."""
