"""Reading a small file safely: a config or web config file, refused when it is not a regular UTF-8 file of at most
:data:`MAX_FILE_BYTES` bytes. Imports nothing of ours, so config and webconfig both read files through it.
"""

from __future__ import annotations

import os
import stat

#: Most bytes a config or web config file may have (a real one has a few hundred): ``/dev/zero`` is not read forever.
MAX_FILE_BYTES = 1 << 20


def read_small_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; raises ValueError saying why not.

    Opened without blocking and checked on the open descriptor: a FIFO would block ``open`` until a writer came, a
    device such as ``/dev/zero`` never ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
            raise ValueError(f"it is {kind}, not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit:_} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
