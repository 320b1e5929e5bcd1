"""``python -m semcov_lib ...`` entry point."""

from semcov_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
