"""Embedding: the protocol and a fake, model files, the ONNX and torch backends, the query encoder, the cache, the factory."""
