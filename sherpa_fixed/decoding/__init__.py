"""Decoding with a model: the drop-in recognizer, its chunker, features, audio and baselines."""
