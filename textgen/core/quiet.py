"""Keeping TensorFlow's C++ start-up lines off the terminal (they bypass its Python log level)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points fd 2 at /dev/null for a moment: TensorFlow's C++ start-up lines bypass its log level.

    Kept when the user asks for TensorFlow's logs with TF_CPP_MIN_LOG_LEVEL=0 or 1.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Imports TensorFlow without its C++ start-up chatter, unless the user asked for it."""
    # 3: TensorFlow's C++ errors too (e.g. oneDNN's int32 notice); failures still raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import tensorflow as tf

        # Device discovery logs "failed call to cuInit" on hosts without a GPU; it does not
        # start the runtime, so multi-worker strategies can still be made afterwards.
        tf.config.list_physical_devices()
