"""textgen: character-level LSTM text generators on corpora of any size, in bounded RAM."""

from textgen.core.config import Config, load_config
from textgen.core.errors import TextgenError

__all__ = ["Config", "TextgenError", "load_config"]
__version__ = "0.1.0"
