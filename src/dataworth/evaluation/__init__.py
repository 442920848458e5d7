"""Evaluation: corruptions with known ground truth, and detection metrics."""
