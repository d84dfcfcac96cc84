"""What every entry point shares: argument parsing that fails in one line, and error handling."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from textgen.core.errors import TextgenError
from textgen.core.filewrite import is_no_space
from textgen.core.quiet import native_stderr_silenced, quiet_tensorflow

EXIT_USAGE = 2  # bad input of any kind
EXIT_INTERRUPTED = 130  # Ctrl-C, after saving what there is to save
__all__ = [
    "EXIT_INTERRUPTED", "EXIT_USAGE", "ArgumentParser", "config_parser", "native_stderr_silenced",
    "quiet_tensorflow", "run", "show_warning",
]  # fmt: skip


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are TextgenErrors (one line, exit 2) instead of usage dumps."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()[1:])  # argparse wraps long usage lines
        raise TextgenError(message, f"usage: {usage}")


def config_parser(prog: str, description: str) -> ArgumentParser:
    """A parser taking `CONFIG [key=value ...]`, the shape of index, train and compare."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help="YAML config, e.g. configs/base.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides, e.g. train.epochs=2"
    )
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one line: `textgen: warning: ...`."""
    sys.stdout.flush()
    print(f"textgen: warning: {message}", file=sys.stderr, flush=True)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Runs an entry point; a TextgenError becomes `textgen: error: ...` and exit status 2.

    A full disk that no writer named is one line too; warnings are one line each.
    """
    warnings.showwarning = show_warning
    try:
        code = main(argv)
    except TextgenError as e:
        code = _error(e.line())
    except KeyboardInterrupt:
        print("\ntextgen: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # `textgen.sample ... | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as e:
        if not is_no_space(e):
            raise
        filename = getattr(e, "filename", None)
        code = _error("no space left on device" + (f" ({filename})" if filename else ""))
    sys.exit(code)


def _error(line: str) -> int:
    sys.stdout.flush()
    print(f"textgen: error: {line}", file=sys.stderr)
    return EXIT_USAGE
