"""Text to token ids and back: sources, tokenizers, the indexer (int32 .npy splits), windows,
streams and the data plan."""

from textgen.data.corpus import Index, index_corpus, load_index

__all__ = ["Index", "index_corpus", "load_index"]
