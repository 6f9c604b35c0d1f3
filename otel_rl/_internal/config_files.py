"""Reading config files safely: a config or web config file is refused when it is not a regular UTF-8 file of at
most :data:`MAX_FILE_BYTES` bytes, and its YAML when it nests too deep or expands through aliases to too many nodes.

Imports only errors.py, so config and webconfig both read their files through it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

from otel_rl._internal.errors import ConfigError

#: Most bytes a config or web config file may have (a real one has a few hundred): ``/dev/zero`` is not read forever.
MAX_FILE_BYTES = 1 << 20
#: Most YAML nodes a config file may expand to: an "alias bomb" of a few hundred bytes expands to billions.
MAX_YAML_NODES = 100_000
#: How deep a config file may nest collections. PyYAML composes recursively: checked on its tokens first, a deep
#: document never reaches the recursion limit, where any finalizer that runs would fail too.
MAX_YAML_DEPTH = 100


def _open_regular(path: str | os.PathLike[str]) -> int:
    """A descriptor of ``path``, opened without blocking and checked to be a regular file; raises ValueError.

    A FIFO would block ``open`` until a writer came, a device such as ``/dev/zero`` never ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise ValueError(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
        raise ValueError(f"it is {kind}, not a regular file")
    return fd


def read_small_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; raises ValueError saying why not."""
    with os.fdopen(_open_regular(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit:_} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None


def file_sha256(path: str | os.PathLike[str]) -> bytes | None:
    """The SHA-256 of a regular file's bytes (a PEM file of any size), or None when it cannot be read as one."""
    try:
        with os.fdopen(_open_regular(path), "rb") as f:
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 16), b""):
                digest.update(chunk)
    except (OSError, ValueError):
        return None
    return digest.digest()


def load_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with bounded work: the document, with its aliases expanded, may hold at most
    :data:`MAX_YAML_NODES` nodes (an alias bomb of a few hundred bytes holds billions), and a nesting too deep
    for the parser is an error, not a RecursionError. ``what`` names the file in a ConfigError
    (``config file '/etc/app.yaml'``)."""
    import yaml

    loader = None
    try:
        if _nesting(yaml, text) > MAX_YAML_DEPTH:
            raise RecursionError
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{what} expands to more than {MAX_YAML_NODES:_} YAML nodes through its aliases "
                              "(*name); allowed: a config without an alias bomb")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:  # problem and position, not PyYAML's snippet of the line (it may hold a token)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}") from None
    except RecursionError:
        raise ConfigError(f"{what} nests too deeply; allowed: collections at most {MAX_YAML_DEPTH} levels "
                          "deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _nesting(yaml: Any, text: str) -> int:
    """The deepest nesting of collections in the YAML ``text``, read from its tokens (the scanner does not recurse)."""
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
               yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    depth = deepest = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, opening):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(token, closing):
            depth -= 1
    return deepest


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (memoised per node: linear time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_NODES + 1  # a node that contains itself expands without end
    if isinstance(node.value, list):
        children = [c for pair in node.value for c in pair] if node.value and isinstance(node.value[0], tuple) \
            else node.value
        size = 1
        for child in children:
            size += _expanded_size(child, sizes)
            if size > MAX_YAML_NODES:
                break
    else:
        size = 1
    sizes[id(node)] = size
    return size
