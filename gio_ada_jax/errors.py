"""The errors a user fixes, and the exit statuses of every command line.

Each command (train.py, evaluate.py, the demo, experiments, prepare, translate, parity) prints a
UserError as one line, `PROGRAM: message`, and exits with its `exit_code`: the message names the
field, file or folder and how to fix it, so a traceback would only hide it. SIGTERM and Ctrl-C
end every command the same way (cli.run).
"""

import signal

USAGE_EXIT_CODE = 2  # a flag, config, dataset, checkpoint or workdir the user must fix
NON_FINITE_EXIT_CODE = 3  # a NaN/inf loss stopped training (the last good checkpoint is kept)
# SIGTERM (preemption) stopped a run after its checkpoint: not 0, so that `train.py ... &&
# evaluate.py ...` never evaluates a half-trained run. 75 is EX_TEMPFAIL ("try again"):
# rerunning the same command resumes.
PREEMPTED_EXIT_CODE = 75
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # Ctrl-C, as a shell reports it
# A checkpoint could not be written (a full disk, a file size limit): sysexits' EX_IOERR. Not
# 2, since nothing the user gave is wrong; rerunning once the disk has room resumes.
IO_ERROR_EXIT_CODE = 74


class UserError(Exception):
  """An error whose message says what to fix; the commands print it and exit `exit_code`."""
  exit_code = USAGE_EXIT_CODE


class ConfigError(UserError, ValueError):
  """A config that cannot run as written; the message says which field and how to fix it."""


class InputError(UserError, ValueError):
  """A flag value, file or folder that the command cannot use as given; the message names it."""


class MissingInput(UserError, FileNotFoundError):
  """A file or folder that the command needs is not there; the message names it."""


class Preempted(UserError):
  """SIGTERM stopped a run after its checkpoint; rerunning the command resumes it."""
  exit_code = PREEMPTED_EXIT_CODE


class Terminated(BaseException):
  """SIGTERM arrived while data was being written (data/interrupts.py); what was unfinished is
  removed. A BaseException, like KeyboardInterrupt: no `except Exception` on the way swallows
  it."""
