"""Text to token ids and back: sources, tokenizers, the indexer (int32 .npy splits), windows,
streams and the data plan."""
