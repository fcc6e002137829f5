"""Every seeded bug of `make mutants` (dev/mutants.py) still applies to the code as it is."""

import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mutants_module():
  spec = importlib.util.spec_from_file_location("mutants", os.path.join(REPO, "dev",
                                                                        "mutants.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


MUTANTS = _mutants_module()


@pytest.mark.parametrize("mutant", MUTANTS.MUTANTS, ids=[m.name for m in MUTANTS.MUTANTS])
def test_each_mutant_changes_its_file_once_and_names_existing_tests(mutant):
  with open(os.path.join(REPO, mutant.path)) as f:
    original = f.read()
  mutated = MUTANTS.check(mutant)
  assert mutated != original
  files = [t.split("::")[0] for t in mutant.tests if t.startswith("tests/")]
  assert files and all(os.path.isfile(os.path.join(REPO, f)) for f in files), mutant.tests


def test_mutant_names_are_unique():
  names = [m.name for m in MUTANTS.MUTANTS]
  assert len(names) == len(set(names))


def test_a_mutant_whose_text_moved_is_named(tmp_path):
  stale = MUTANTS.Mutant("stale", "test", "gio_ada_jax/train/losses.py", "text that is not there",
                         "", ("tests/test_losses.py",))
  with pytest.raises(ValueError, match="stale: its text occurs 0 times in gio_ada_jax/train/losses.py"):
    MUTANTS.check(stale)
