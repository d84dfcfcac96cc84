"""`textgen COMMAND ...`: the console script; each command is also `python -m textgen.COMMAND`."""

from __future__ import annotations

import importlib
import sys

from textgen import cli

COMMANDS = {
    "index": "index a corpus into int32 memmaps",
    "train": "train (or resume) a run",
    "sample": "generate text from a run",
    "evaluate": "bits per character of a run on held-out text",
    "compare": "one-hot vs embedding memory, measured",
    "export": "write a run as a TensorFlow SavedModel (generate signature)",
    "serve": "serve a run or an export over HTTP (JSON, SSE, TF Serving REST, a page)",
}


def main() -> None:
    """Dispatches `textgen COMMAND args...` to `textgen.COMMAND.main(args)`."""
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
        print("usage: textgen COMMAND [args]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else cli.EXIT_USAGE)
    module = importlib.import_module(f"textgen.{sys.argv[1]}")
    cli.run(module.main, sys.argv[2:])


if __name__ == "__main__":
    main()
