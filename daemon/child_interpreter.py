"""The command line of a fresh Python child that serves one function over an inherited pipe.

A fresh interpreter, not a multiprocessing one: multiprocessing's spawn and forkserver both re-run
the parent's main script in every child (measured), which for the `tigerwatch` entry point imports
the CLI and its dependencies, and for any script that imports torch would load torch into every
decoder. The parent sends its sys.path first, so the child imports the same code. `-P` keeps the
current directory off the path the bootstrap's own imports use: a multiprocessing.py there would
be imported instead of the standard one, and every child would die at start.
"""

from __future__ import annotations

import subprocess
import sys

_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "connection = Connection({fd})\n"
    "sys.path[:] = connection.recv()\n"
    "from {module} import {function}\n"
    "{function}(connection)\n"
)


def child_command(module: str, function: str, fd: int) -> list[str]:
    """`python ... -c BOOTSTRAP`: the child calls module.function(connection) on pipe end `fd`,
    after taking its sys.path from the first message; the parent's -W, -X and -O options are
    passed on, as multiprocessing passes them to its children."""
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    bootstrap = _BOOTSTRAP.format(fd=fd, module=module, function=function)
    return [sys.executable, *flags, "-P", "-c", bootstrap]
