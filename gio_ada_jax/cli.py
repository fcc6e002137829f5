"""What every command line shares (train.py, evaluate.py, the demo, experiments, prepare,
translate, parity): absl's flag parsing with a flag that is unknown or does not parse said in one
line with exit status 2, a UserError printed as one line with its exit status, and SIGTERM while
data was written (errors.Terminated: exit status 75) or Ctrl-C (130) said in one line."""

import sys
from typing import Callable

from absl import app
from absl import flags

from gio_ada_jax import errors
from gio_ada_jax.errors import UserError


def _parse_flags(argv: list[str], program: str) -> list[str]:
  """absl's flag parsing (app.run's flags_parser) with an unknown flag or a value that does not
  parse, such as --config.train.mesh_data=2.5, said in one line naming the flag, exit status 2
  (absl: two lines, exit status 1), starting with `program`."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"{program}: {e}", file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)


def run(main: Callable[[list[str]], int | None], program: str) -> None:
  """app.run(main) with _parse_flags, and a UserError that `main` raises printed as
  `program: message` with the error's exit status instead of a traceback (flag errors start
  with `program` too)."""

  def main_or_user_error(argv):
    try:
      return main(argv)
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

  app.run(main_or_user_error, flags_parser=lambda argv: _parse_flags(argv, program))
