"""What a person sees in a terminal: log lines that do not collide with progress bars, bars only on a
terminal, plain lines when piped."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["console", "progress", "setup_logging"]

_CONSOLE: Console | None = None


def console() -> Console:
    """Returns this process's console on stderr (one, so that log lines and progress bars share it)."""
    global _CONSOLE
    if _CONSOLE is None:
        _CONSOLE = Console(stderr=True)
    return _CONSOLE


def setup_logging(prog: str, level: str | int) -> None:
    """Routes logging to stderr: through rich on a terminal (lines print above live progress bars instead
    of into them), as plain timestamped lines otherwise (log files, pipes)."""
    if console().is_terminal:
        handler: logging.Handler = RichHandler(
            console=console(), show_path=False, markup=False, log_time_format="%H:%M:%S"
        )
        handler.setFormatter(logging.Formatter(f"{prog}[%(process)d] %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prog}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    # force: importing Opacus (through the defense registry) installs a root handler of its own.
    logging.basicConfig(level=level, handlers=[handler], force=True)


def progress(enabled: bool = True) -> Progress:
    """Returns progress bars on this process's console, shown only on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
        disable=not (enabled and console().is_terminal),
        transient=False,
    )
