"""Reading a model folder: graphs, axes, weights, tokens, metadata, and the verdict built from them."""
