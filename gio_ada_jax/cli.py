"""What the training command lines share (train.py, the demo, the experiments command): the
errors that are the user's to fix, each printed as one line with exit status 2, and the other
exit statuses, so that the three cannot drift apart (and the flag parsing train.py and
evaluate.py share)."""

import os
import sys

from absl import flags

from gio_ada_jax.config_checks import ConfigError
from gio_ada_jax.cyclegan.translate import TranslationError
from gio_ada_jax.data.formats import DataError
from gio_ada_jax.data.pipeline import DatasetNotPrepared, DatasetUnusable
from gio_ada_jax.train.checkpoint import UnrestorableCheckpoint
from gio_ada_jax.train.loop import NonFiniteError  # noqa: F401 (the CLIs catch cli.NonFiniteError)
from gio_ada_jax.train.workdir_lock import WorkdirLockError

USAGE_EXIT_CODE = 2  # a config, dataset, checkpoint or workdir the user must fix: one line
NON_FINITE_EXIT_CODE = 3  # a NaN/inf loss stopped training (the last good checkpoint is kept)

# Errors whose message names the field, file or folder and how to fix it: printed, exit 2.
USER_ERRORS = (ConfigError, DatasetNotPrepared, DatasetUnusable, DataError, TranslationError,
               WorkdirLockError, UnrestorableCheckpoint)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (app.run's flags_parser) with a value that does not parse, such as
  --config.train.mesh_data=2.5, said in one line naming the flag, exit status 2 (absl: two
  lines, exit status 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"{os.path.basename(argv[0])}: {e}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
