"""Viewer outputs (optional extras): Rerun recordings of the per-frame results."""
