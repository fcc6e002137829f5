"""What every command line shares (train.py, evaluate.py, the demo, experiments, prepare,
translate, parity): absl's flag parsing with a flag that is unknown or does not parse, or a
--config file that does not load, said in one line with exit status 2, a UserError printed as
one line with its exit status, and SIGTERM while data was written (errors.Terminated: exit
status 75) or Ctrl-C (130) said in one line."""

import signal
import sys
import threading
import traceback
from typing import Callable

from absl import app
from absl import flags

from gio_ada_jax import errors
from gio_ada_jax.errors import UserError


def _config_file_problem(error: BaseException) -> str:
  """One line for a --config file that did not load: the error, and where in the file."""
  if isinstance(error, OSError):  # ml_collections lists the paths it tried; the last line says
    return str(error).strip().splitlines()[-1].strip()  # why ("[Errno 2] No such file ...")
  if isinstance(error, SyntaxError):
    return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
  frames = traceback.extract_tb(error.__traceback__)
  where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
  return f"{type(error).__name__}: {error}{where}"


def _parse_flags(argv: list[str], program: str) -> list[str]:
  """absl's flag parsing (app.run's flags_parser) with an unknown flag or a value that does not
  parse, such as --config.train.mesh_data=2.5, or a --config file that does not load (missing,
  a syntax error, get_config raising) said in one line naming the flag, exit status 2 (absl:
  two lines and exit status 1, or a traceback), starting with `program`."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    flag, found, trace = message.partition(": Error whilst parsing config file:")
    if found:  # get_config raised a ValueError (a ConfigError): ml_collections adds its traceback
      message = f"{flag}: {trace.strip().splitlines()[-1].split(': ', 1)[-1]}"
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  except Exception as e:  # pylint: disable=broad-except  (a config file's own code raised)
    print(f"{program}: a --config file did not load: {_config_file_problem(e)}",
          file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  for name in flags.FLAGS:
    # ml_collections keeps a config file that it could not read as a placeholder that raises
    # only when it is used; say so now.
    error = getattr(flags.FLAGS[name].value, "_error", None)
    if isinstance(error, OSError):
      print(f"{program}: --{name}: the config file did not load: {_config_file_problem(error)}",
            file=sys.stderr)
      sys.exit(errors.USAGE_EXIT_CODE)
  return remaining


_CTRL_C = {"received": False}


def _interrupt(signum, frame) -> None:
  """Python's own Ctrl-C handler (KeyboardInterrupt), remembering that it ran: Python drops an
  exception raised inside a garbage-collection callback (JAX has one), and the command would
  then go on as if no Ctrl-C had come."""
  _CTRL_C["received"] = True
  signal.default_int_handler(signum, frame)


def run(main: Callable[[list[str]], int | None], program: str) -> None:
  """app.run(main) with _parse_flags, and a UserError that `main` raises printed as
  `program: message` with the error's exit status instead of a traceback (flag errors start
  with `program` too). A Ctrl-C that Python dropped still ends the command with exit 130."""

  def main_or_user_error(argv):
    _CTRL_C["received"] = False
    previous = signal.getsignal(signal.SIGINT)
    watch = (threading.current_thread() is threading.main_thread()
             and previous is signal.default_int_handler)
    if watch:
      signal.signal(signal.SIGINT, _interrupt)
    try:
      status = main(argv)
      if _CTRL_C["received"]:
        print(f"{program}: Ctrl-C came while Python could not stop (in garbage collection), so "
              f"the command ran to its end and what it wrote is complete; exit status "
              f"{errors.INTERRUPTED_EXIT_CODE} as for any Ctrl-C.", file=sys.stderr)
        return errors.INTERRUPTED_EXIT_CODE
      return status
    except UserError as e:
      print(f"{program}: {e}", file=sys.stderr)
      return e.exit_code
    except errors.Terminated:  # what was unfinished is removed; checkpoints are kept
      print(f"{program}: stopped by SIGTERM before the data being written was complete (exit "
            f"status {errors.PREEMPTED_EXIT_CODE}); rerun the same command to resume.",
            file=sys.stderr)
      return errors.PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
      print(f"{program}: stopped by Ctrl-C (exit status {errors.INTERRUPTED_EXIT_CODE}); rerun "
            "the same command to resume from what was saved.", file=sys.stderr)
      return errors.INTERRUPTED_EXIT_CODE
    finally:
      if watch:
        signal.signal(signal.SIGINT, previous)

  app.run(main_or_user_error, flags_parser=lambda argv: _parse_flags(argv, program))
