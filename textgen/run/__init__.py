"""A run dir on disk: its layout, saved config and tokenizer, checkpoints, metrics and samples."""
