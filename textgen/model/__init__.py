"""The network: `build_model`, the lean CPU LSTM kernel, and the one-token step model."""
