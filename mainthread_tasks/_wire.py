"""The wire format between Blender and its processes: local workers and a cluster pool's broker
(standard library only; a worker, run by path, loads it by path: see ``_process_child``).

A message is a 16-byte prefix (the magic ``MAGIC``, the header length as an unsigned 32-bit and
the body length as an unsigned 64-bit integer, little-endian), the header and the body (a pickle,
or empty). Headers hold built-in data only: Blender reads a reply's with ``parse_reply_header``,
which runs no code, whatever junk the result pipe holds. Each task carries a number that its reply
repeats, so a reply is never taken for another task's.

- Blender -> worker: header ``(number, sys_path or None, packages, max_result_bytes)``, body the
  pickled ``(fn, args, kwargs)`` (see ``_process_child``).
- worker -> Blender (``reply_header``): header ``REPLY.pack(number, RESULT)`` and the pickled
  result, or ``REPLY.pack(number, FAILURE)`` followed by the pickled ``(type name, message,
  traceback text)``, and the pickled exception (empty when it cannot be pickled or is larger than
  ``max_result_bytes``). A header never exceeds ``MAX_HEADER_BYTES``.
- Blender -> broker: header ``("task", number, packages, max_result_bytes, name)`` with the same
  body, or ``("cancel", number)``.
- broker -> Blender: the replies above (computed on a Dask worker), plus ``REPLY.pack(number,
  LOST)`` followed by the pickled text (that task was lost on the cluster) and ``REPLY.pack(0,
  FATAL)`` followed by the pickled text (the broker ends: every task in flight is lost).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from typing import Any

PREFIX = struct.Struct("<4sIQ")
MAGIC = b"MTp1"  # what every message starts with (p: process, 1: this format)
REPLY = struct.Struct("<QB")  # how a reply's header starts: the task's number and its kind (below)
#: The kinds of reply.
FAILURE, RESULT, LOST, FATAL = 0, 1, 2, 3
#: The largest header either side sends; the child shortens long exception texts to stay below it.
MAX_HEADER_BYTES = 1 << 20
PROTOCOL = pickle.HIGHEST_PROTOCOL  # local workers run Blender's Python version; protocol 5 since 3.8

_SMALL = 1 << 16  # a body this small goes out in the same write as its prefix and header


class BadMessage(ValueError):
    """What is in a pipe is not a message of this format (or is over its limits)."""


def pack_prefix(header_size: int, body_size: int) -> bytes:
    return PREFIX.pack(MAGIC, header_size, body_size)


def unpack_prefix(data: bytes | bytearray | memoryview, max_body: int | None = None) -> tuple[int, int]:
    """``(header size, body size)`` from a message's first ``PREFIX.size`` bytes.

    Raises:
        BadMessage: the magic is wrong, the header is over ``MAX_HEADER_BYTES``, or the body over
            ``max_body`` (when given).
    """
    magic, header_size, body_size = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BadMessage(f"it starts with {bytes(data[: PREFIX.size])!r}, not a message")
    if header_size > MAX_HEADER_BYTES:
        raise BadMessage(f"it announces a header of {header_size:,} bytes, more than {MAX_HEADER_BYTES:,}")
    if max_body is not None and body_size > max_body:
        raise BadMessage(f"it announces a body of {body_size:,} bytes, more than {max_body:,}")
    return header_size, body_size


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a header may hold built-in data only, not {module}.{name}")


def load_header(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle a header: built-in data only, so no code runs. Raises BadMessage."""
    try:
        return _DataOnly(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - whatever the bytes make pickle raise, it is not a header
        raise BadMessage(f"its header does not unpickle: {exc!r}") from None


def reply_header(number: int, failure: tuple[str, str, str] | None = None) -> bytes:
    """The header of the reply to task ``number``: a result, or the ``failure``'s (type name,
    message, traceback text)."""
    if failure is None:
        return REPLY.pack(number, RESULT)
    return REPLY.pack(number, FAILURE) + pickle.dumps(failure, PROTOCOL)


def notice_header(number: int, kind: int, text: str) -> bytes:
    """A broker's LOST (task ``number``) or FATAL (number 0) reply, saying why in ``text``."""
    return REPLY.pack(number, kind) + pickle.dumps(text, PROTOCOL)


def parse_reply_header(data: bytes | bytearray | memoryview) -> tuple[int, tuple[str, str, str] | None]:
    """``(number, failure)`` from a reply's header (see ``reply_header``). Raises BadMessage."""
    if len(data) >= REPLY.size:
        number, ok = REPLY.unpack_from(data)
        if ok == RESULT and len(data) == REPLY.size:
            return number, None
        if ok == FAILURE:
            failure = load_header(data[REPLY.size :])
            if isinstance(failure, tuple) and len(failure) == 3 and all(isinstance(x, str) for x in failure):
                return number, failure
    raise BadMessage(f"its header {bytes(data[:40])!r} is no reply's")


def parse_broker_header(data: bytes | bytearray | memoryview) -> tuple[int, int, Any]:
    """``(number, kind, failure or text)`` from a broker's reply header. Raises BadMessage."""
    if len(data) >= REPLY.size:
        number, kind = REPLY.unpack_from(data)
        if kind in (LOST, FATAL):
            text = load_header(data[REPLY.size :])
            if isinstance(text, str):
                return number, kind, text
        else:
            number, failure = parse_reply_header(data)
            return number, kind, failure
    raise BadMessage(f"its header {bytes(data[:40])!r} is no broker's reply")


def write_message(fd: int, header: bytes, body: bytes = b"") -> None:
    """Write one message to the pipe ``fd`` (blocking). Raises OSError (BrokenPipeError) if the
    reader is gone."""
    data = pack_prefix(len(header), len(body)) + header
    if len(body) <= _SMALL:
        data += body
        body = b""
    for part in (data, body):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 24))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> tuple[bytes, bytes] | None:
    """Read one message from ``fd`` (blocking): ``(header, body)``, or None at end-of-file.

    Raises:
        BadMessage: what came is not a message.
    """
    prefix = _read_exact(fd, PREFIX.size)
    if prefix is None:
        return None
    header_size, body_size = unpack_prefix(prefix)
    header = _read_exact(fd, header_size)
    body = _read_exact(fd, body_size)
    if header is None or body is None:
        return None
    return header, body
