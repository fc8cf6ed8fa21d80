"""The time limit on one MATH comparison (SIGALRM on the main thread)."""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time


class Timeout(BaseException):
  """Raised by the SIGALRM handler; a BaseException so that sympy's own
  ``except Exception`` clauses cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
  """Raises ``Timeout`` in the block after ``seconds`` (SIGALRM, main thread
  only), then again every 50 ms: an exception raised while Python runs a gc
  or ``__del__`` callback is swallowed, so one alarm is not enough (gc is
  also paused in the block, so its callbacks do not run there). Yields a
  dict whose "fired" is True once the alarm went off (check it after the
  block). Restores the outer handler and re-arms an outer timer afterwards."""
  state = {"fired": False}

  def on_alarm(signum, frame):
    state["fired"] = True
    raise Timeout()

  gc_was_enabled = gc.isenabled()
  gc.disable()  # no gc callbacks (e.g. jax's) for the alarm to land in
  old_handler = signal.signal(signal.SIGALRM, on_alarm)
  outer_left, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
  start = time.monotonic()
  try:
    yield state
  finally:
    try:
      signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
      signal.signal(signal.SIGALRM, old_handler)
      if gc_was_enabled:
        gc.enable()
    if outer_left > 0:
      signal.setitimer(
          signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-3), outer_interval
      )


def can_alarm() -> bool:
  """Whether SIGALRM timers are usable here (POSIX, main thread)."""
  return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
