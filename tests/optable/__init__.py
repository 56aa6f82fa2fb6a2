"""The op table: one row per public PyTorch name, and the tests and coverage table generated from it."""
