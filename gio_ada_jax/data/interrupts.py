"""SIGTERM while a dataset is written: an exception, so that clean-up code runs.

By default SIGTERM ends a process at once: TFDS's temporary folder of the dataset being written
stays behind and worker processes may be left half-started. Inside `terminated_on_sigterm` it
raises Terminated instead. (A module of its own: `python -m gio_ada_jax.data.prepare` runs
prepare as __main__, and the builders must share this state with it.)
"""

import contextlib
import signal
import threading

from gio_ada_jax.errors import Terminated


_SIGTERM = {"deferred": 0, "received": False}  # main thread only


def _raise_terminated(signum, frame) -> None:
  del signum, frame
  _SIGTERM["received"] = True
  if not _SIGTERM["deferred"]:
    raise Terminated()


def check_terminated() -> None:
  """Raise Terminated if a SIGTERM arrived and was not raised yet: Python drops an exception a
  signal handler raises while a garbage-collector callback or a __del__ runs, so the writers
  call this between examples."""
  if _SIGTERM["received"] and not _SIGTERM["deferred"]:
    raise Terminated()


@contextlib.contextmanager
def terminated_on_sigterm():
  """While writing: SIGTERM raises Terminated, so TFDS's clean-up of its temporary folder runs
  (SIGTERM's default ends the process at once and leaves the folder behind). Raised at the end
  at the latest, if the handler's exception was dropped."""
  if threading.current_thread() is not threading.main_thread():
    yield  # signal handlers belong to the main thread
    return
  _SIGTERM["received"] = False
  previous = signal.signal(signal.SIGTERM, _raise_terminated)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
    received, _SIGTERM["received"] = _SIGTERM["received"], False
  if received:
    raise Terminated()


@contextlib.contextmanager
def sigterm_deferred():
  """Inside, a SIGTERM that would raise Terminated raises it at the end instead: around
  starting worker processes (multiprocessing's Pool cleans up after an Exception while starting
  them, not after a BaseException such as Terminated)."""
  _SIGTERM["deferred"] += 1
  try:
    yield
  finally:
    _SIGTERM["deferred"] -= 1
  check_terminated()
