"""Command-line interface: ``semcov {generate,train,grid,tune,verify,audit} ...`` (or ``python -m semcov_lib``).

Each sub-command lives in the module that owns the concept; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``--help`` is instant. :func:`main` is the one error boundary: any semcov
error, bad value or OS error becomes one line ``error: ...`` plus a hint, exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from semcov_lib import __version__

COMMANDS = {
    "generate": ("semcov_lib.data.benchmark", "generate the embedded SCI benchmark in the MILK10k layout"),
    "train": ("semcov_lib.experiment.train", "train a registered method and write a run folder"),
    "grid": ("semcov_lib.experiment.grid", "train every run the notebooks need (locally or on SLURM) or print the commands"),
    "tune": ("semcov_lib.experiment.tune", "choose SemCovNet's coverage correction on the validation split (3 seeds)"),
    "verify": ("semcov_lib.data.verify", "check a local dataset copy against its data manifest"),
    "audit": ("semcov_lib.report.audit", "SCI audit (coverage, CDI) of any table a user brings"),
}

DESCRIPTION = (
    "Semantic Coverage Imbalance (SCI): generate the benchmark, train methods, audit tables "
    "and verify dataset copies. Run 'COMMAND --help' for the options of a command."
)

#: Errors that are the user's to fix: reported in one line. Anything else is a bug: traceback.
USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, MemoryError)


def _prog() -> str:
    """``semcov`` when run as the console script, else ``python -m semcov_lib``."""
    name = os.path.basename(sys.argv[0] or "")
    return "semcov" if name.startswith("semcov") and not name.endswith(".py") else "python -m semcov_lib"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"semcov {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (may also follow the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module whose command runs
            import_module(module_name).add_arguments(sp)
    return parser


def format_error(exc: BaseException) -> str:
    """One line ``error: <message>`` plus, on a second line, a hint of what to do."""
    message = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
        message = f"{message}: {exc.filename}"
    hint = getattr(exc, "hint", "") or _default_hint(exc)
    return f"error: {message or type(exc).__name__}\nhint: {hint} (--debug shows the traceback)"


def _default_hint(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "choose a folder you can write to (--out), or fix its permissions"
    if isinstance(exc, MemoryError):
        return "use a smaller profile, fewer samples or a smaller image size"
    if isinstance(exc, OSError):
        return "check the path and the free disk space"
    return "fix the value named above and run again"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser(argv).parse_args(argv)
    try:
        module = import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary of the command line
        from semcov_lib.errors import SemcovError

        if debug or not isinstance(exc, (SemcovError, *USER_ERRORS)):
            raise
        print(format_error(exc), file=sys.stderr)
        return 2
