"""`python -m textgen.export RUN_DIR OUT_DIR [--checkpoint C] [--force]`: a run as a SavedModel."""

from __future__ import annotations

from collections.abc import Sequence

from textgen import cli
from textgen.run.rundir import RunDir
from textgen.serving.export import export
from textgen.serving.graph_tokenizer import PieceSpec

__all__ = ["export", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m textgen.export RUN_DIR OUT_DIR [--checkpoint C] [--force]`."""

    parser = cli.ArgumentParser(
        prog="textgen.export",
        description="Write a run as a TensorFlow SavedModel (sampling loop and tokenizer in "
        "the graph; signature serving_default).",
    )
    parser.add_argument("run_dir", help="the run dir (train.out_dir)")
    parser.add_argument("out_dir", help="where the SavedModel goes")
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best (the default: model.keras, the lowest val loss the run reached), latest or "
        "RUN/checkpoints/ckpt-N",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    run.resolve_checkpoint(args.checkpoint)  # before anything slow
    PieceSpec.from_tokenizer(run.load_tokenizer())  # refuses what the graph cannot hold
    cli.quiet_tensorflow()
    with cli.native_stderr_silenced():
        out = export(args.run_dir, args.out_dir, checkpoint=args.checkpoint, force=args.force)
    print(f"exported {args.run_dir} to {out} (signature serving_default)")
    return 0


if __name__ == "__main__":
    cli.run(main)
