"""A model for apps: the SavedModel export and its graph tokenizer, the batcher, the HTTP app."""
