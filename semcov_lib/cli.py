"""Command-line interface: ``python -m semcov_lib {generate,train,verify,audit} ...``.

Each sub-command lives in the module that owns the concept; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

COMMANDS = {
    "generate": ("semcov_lib.benchmark", "generate the embedded SCI benchmark in the MILK10k layout"),
    "train": ("semcov_lib.train", "train a registered method and write a run folder"),
    "grid": ("semcov_lib.grid", "train every run the notebooks need (locally or on SLURM) or print the commands"),
    "verify": ("semcov_lib.verify", "check a local dataset copy against its data manifest"),
    "audit": ("semcov_lib.audit", "SCI audit (coverage, CDI) of any table a user brings"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semcov_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module whose command runs
            import_module(module_name).add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # clear one-line errors, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
