"""Rewriting a model folder: planned, atomic, verified changes to graphs and weight files."""
