"""What every job's main shares: --debug, and bad input reported as one line with a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from stylegan.errors import UserError

EXIT_USER_ERROR = 2


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
        argv: list[str] | None = None) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    args = parser.parse_args(argv)
    try:
        main(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
