"""What every job shares: --debug, bad input reported as one line with exit code 2, and the `stylegan <job>`
command (`python -m jobs <job>`) that runs any job of this package by name."""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import signal
import sys
import threading
from collections.abc import Callable

import jobs
from stylegan.errors import UserError

EXIT_USER_ERROR = 2
HELPERS = ("cli", "launch")  # modules of this package that are not jobs (launch: torchrun's own arguments)


class StopSignal(KeyboardInterrupt):  # noqa: N818 - a KeyboardInterrupt, so pools and loaders stop as on Ctrl-C
    """SIGINT or SIGTERM arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop(signum: int, frame: object) -> None:
    raise StopSignal(signum)


def _full_disk(e: BaseException | None) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _quiet_full_disk(hook: Callable) -> Callable:
    """A thread's excepthook that leaves a full disk to the main thread (TensorBoard writes from a thread of its
    own, and its writer hands the error back to the main thread, which reports it in one line)."""
    def excepthook(info: threading.ExceptHookArgs) -> None:
        if not _full_disk(info.exc_value):
            hook(info)
    return excepthook


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
        argv: list[str] | None = None) -> None:
    """Parse, run, and report: bad input and a full disk as one line (exit 2); SIGINT or SIGTERM as one line saying
    what is kept (exit 128 + the signal). A signal whose handler is not the default (a launcher's, or ignored in a
    worker whose parent stops it) is left alone, and so is training's own stop (stylegan.cluster.StopRequest)."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, stop)
    if not args.debug:
        threading.excepthook = _quiet_full_disk(threading.excepthook)
    try:
        main(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as e:
        if args.debug or not _full_disk(e):
            raise
        print(f"error: {e.filename or 'an output file'}: no space left on the device (disk full or over quota): "
              "free space, then run the same command again; every file written before is complete and kept",
              file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"stopped on {signal.Signals(signum).name}: every file written so far is complete (files appear "
              "atomically); run the same command again to go on from there", file=sys.stderr, flush=True)
        sys.exit(128 + signum)


def job_names() -> list[str]:
    """Every job: each module of this package (but the helpers) has build_parser() and main(args)."""
    return sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if m.name not in HELPERS
                  and not m.name.startswith("_"))


def run_job(name: str, argv: list[str]) -> None:
    """`python -m jobs.<name> argv...` in this process (exits like it: SystemExit with its code)."""
    module = importlib.import_module(f"jobs.{name}")
    parser = module.build_parser()
    parser.prog = f"stylegan {name}"
    run(module.main, parser, argv)


def main(argv: list[str] | None = None) -> None:
    """The `stylegan` command: `stylegan <job> [args]`; `--list` prints the job names, one per line."""
    argv = sys.argv[1:] if argv is None else argv
    names = job_names()
    if argv[:1] == ["--list"]:
        print("\n".join(names))
    elif not argv or argv[0] in ("-h", "--help"):
        print(f"usage: stylegan <job> [args]   (stylegan <job> --help for a job's options)\njobs: {', '.join(names)}")
    elif argv[0] not in names:
        print(f"error: unknown job '{argv[0]}': choose from {', '.join(names)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    else:
        run_job(argv[0], argv[1:])
