"""Faults at the stage boundaries: the Nth file rename (``os.replace``, or ``kit.store.io._exchange``,
the atomic swap of a staged folder — how every kit output lands). ``kill`` SIGKILLs the process
just before it, ``enospc`` raises "No space left on device" there, ``count`` injects nothing.

As a script, ``python tests/fault_driver.py <kit args>`` runs ``python -m kit <args>`` under
``KIT_FAULT=kill:N | enospc:N | count`` (count prints ``renames: K`` to stderr at the end);
in-process, :func:`inject` does the same for a ``with`` block."""
import os
import signal
import sys
from contextlib import contextmanager


class Counter:
    def __init__(self, mode: str, at: int):
        self.mode, self.at, self.calls = mode, at, 0

    def boundary(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "enospc":
                raise OSError(28, "No space left on device")


@contextmanager
def inject(mode: str = "count", at: int = 0):
    import kit.store.io

    counter, real_replace, real_exchange = Counter(mode, at), os.replace, kit.store.io._exchange

    def replace(src, dst, *args, **kwargs):
        counter.boundary()
        return real_replace(src, dst, *args, **kwargs)

    def exchange(a, b):
        counter.boundary()
        return real_exchange(a, b)

    os.replace, kit.store.io._exchange = replace, exchange
    try:
        yield counter
    finally:
        os.replace, kit.store.io._exchange = real_replace, real_exchange


if __name__ == "__main__":
    from kit.cli import main

    mode, _, at = os.environ.get("KIT_FAULT", "count").partition(":")
    with inject(mode, int(at or 0)) as counter:
        rc = main(sys.argv[1:])
    if mode == "count":
        print(f"renames: {counter.calls}", file=sys.stderr)
    sys.exit(rc)
