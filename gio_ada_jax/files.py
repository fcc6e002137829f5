"""Whole-file writes: a file appears under its name complete or not at all."""

import os
import re
import uuid
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path: str, data: str | bytes | Callable[[BinaryIO], None]) -> None:
  """Write `data` (text, bytes, or a function writing to a binary file) to `path`.

  It goes to a temporary name unique to this write (several processes may write the same
  path) and is renamed at the end, so readers never see half a file; the folder is created.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temporary = f"{path}.{uuid.uuid4().hex}.tmp"
  try:
    with open(temporary, "xb") as f:
      if callable(data):
        data(f)
      else:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def is_temporary_of(filename: str, name: str) -> bool:
  """Whether `filename` is a temporary file that `atomic_write` of `name` leaves if killed."""
  return re.fullmatch(re.escape(name) + r"(\.[0-9a-f]{32})?\.tmp", filename) is not None
