"""Calling a script's ``main`` the way a shell does: its return value, or the code it exits with."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def exit_status(main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """What the shell would see: ``main``'s result, or argparse's exit code for bad usage."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
