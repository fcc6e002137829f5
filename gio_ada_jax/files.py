"""Whole-file writes: a file appears under its name complete or not at all; and the check that
an output folder can be written, made before the work that fills it."""

import os
import re
import uuid
from collections.abc import Callable
from typing import BinaryIO

from gio_ada_jax.errors import InputError


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


def check_writable_folder(path: str, what: str, create: bool = True) -> None:
  """Create the folder `path` if needed (`create`; else only check that its nearest existing
  parent is writable); InputError naming `what` (e.g. "--output_dir X") when it is a file,
  cannot be created or cannot be written by this user."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise InputError(f"{what} is a file, not a folder; give a folder (a new one is created).")
  if create:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise InputError(f"{what}: cannot create that folder ({e.strerror}); give one this user "
                       "can write.") from None
  existing = path
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not (os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)):
    raise InputError(f"{what}: this user cannot write into {existing}; give a folder it can.")
