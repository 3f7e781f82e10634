"""Checking a model folder against the 0.6B release layout and an independent Python decoder."""
