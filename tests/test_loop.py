"""The training loop's console line and its stop signals (train/loop.py); the loop itself runs
in test_trainer.py."""

import os
import signal
import time

import pytest

from gio_ada_jax.train import loop


def test_the_eta_counts_days_instead_of_wrapping_every_24_hours():
  metrics = {"loss_seg": 1.5, "grad_norm": 2.0}
  line = loop.format_progress(10, 10 + 39 * 3600, metrics, steps_per_s=1.0, images_per_s=4.0)
  assert line.endswith("| ETA 1d 15:00:00"), line
  assert "seg=1.5000" in line and "grad_norm" not in line
  assert loop.format_progress(0, 3723, metrics, 1.0, 4.0).endswith("ETA 01:02:03")
  assert loop.format_progress(0, 10, metrics, 0.0, 0.0).endswith("ETA ?")
  # Past what time.gmtime can hold (num_steps=1e16 at one step a second).
  assert loop.format_progress(0, 10**16, metrics, 1.0, 4.0).endswith(
      f"ETA {10**16 // 86400}d 17:46:40")


def test_a_first_ctrl_c_asks_the_loop_to_stop_and_a_second_interrupts_at_once():
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
  stop = loop.StopFlag()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # the handler runs between bytecodes of this thread
    assert stop.signal == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)
    assert stop.signal == signal.SIGINT  # the first one decides
  finally:
    stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
  """A job started with `&` from a script ignores SIGINT; the loop does not take it up."""
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    stop = loop.StopFlag()
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    assert stop.signal is None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    stop.restore()
  finally:
    signal.signal(signal.SIGINT, previous)
