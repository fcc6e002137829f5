"""`pip install .` into a fresh venv outside the repository: the package needs nothing from
configs/ (configs import the package, never the reverse), and the programs' default configs load
from anywhere."""

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from configs import default as default_config
from configs import demo as demo_config

REPO = Path(__file__).resolve().parents[1]
# The installed dependencies (jax, flax, tensorflow, ...) are reused, not installed again: the
# fresh venv sees this environment's site-packages through a plain path in a .pth file, so
# that folder's own .pth files (the editable install of a checkout among them) are not run.
DEPENDENCIES = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})

# Run from the fresh venv, in a folder outside the repository: the imports of train.py and
# evaluate.py (spliced in) and the trainer's; then one program is imported and its own flags
# parsed, which loads its default config (`--config` given no value).
PROBE = """
import json
try:
  import configs
  configs_found = configs.__file__ or str(configs.__path__)
except ModuleNotFoundError:
  configs_found = None
{imports}
import gio_ada_jax
import gio_ada_jax.trainer
from absl import flags
{program}
flags.FLAGS({argv!r})
print(json.dumps({{"package": gio_ada_jax.__file__, "configs": configs_found,
                  "config": json.loads(flags.FLAGS.config.to_json_best_effort(sort_keys=True))}}))
"""
# Each program with a default config: its import and flag definitions, its command line, and
# the config file of this repository that its default must equal.
PROGRAMS = {
    "demo": ("import gio_ada_jax.demo  # defines its flags", ["demo"], demo_config),
    "prepare": ("from gio_ada_jax.data import prepare\nprepare._define_flags()",
                ["prepare", "--dataset", "procedural"], default_config),
    "parity": ("from gio_ada_jax.interop import parity\nparity._define_flags()", ["parity"],
               default_config),
}


def _imports(script: Path) -> str:
  """The top-level import statements of a script, as source."""
  source = script.read_text()
  return "\n".join(ast.get_source_segment(source, node) for node in ast.parse(source).body
                   if isinstance(node, (ast.Import, ast.ImportFrom)))


def _as_json(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory):
  """A fresh venv with the package pip-installed (not editable) from a copy of its sources."""
  root = tmp_path_factory.mktemp("install")
  assert REPO not in root.parents
  source = root / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  shutil.copytree(REPO / "gio_ada_jax", source / "gio_ada_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  venv = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      capture_output=True, text=True, check=True).stdout.strip()
  Path(site, "dependencies.pth").write_text("".join(path + "\n" for path in DEPENDENCIES))
  install = subprocess.run(
      [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
       "--ignore-installed", "--no-index", "--no-cache-dir", "."],
      cwd=source, env=_environment(), capture_output=True, text=True, check=False)
  assert install.returncode == 0, install.stderr
  (root / "elsewhere").mkdir()  # the programs' working folder: empty, outside the repository
  return python


def _environment() -> dict:
  """This environment without what would put the repository on sys.path."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
  env.update(JAX_PLATFORMS="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1")
  return env


def _run(python, *args):
  return subprocess.run([python, *args], cwd=python.parents[2] / "elsewhere", env=_environment(),
                        capture_output=True, text=True, check=False)


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_installed_package_imports_and_loads_the_default_config(venv_python, program):
  code, argv, expected = PROGRAMS[program]
  imports = "\n".join(_imports(REPO / script) for script in ("train.py", "evaluate.py"))
  result = _run(venv_python, "-c", PROBE.format(imports=imports, program=code, argv=argv))
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  assert Path(found["package"]).is_relative_to(venv_python.parents[1]), found["package"]
  assert found["configs"] is None  # the repository's configs/ is not on the path
  assert found["config"] == _as_json(expected.get_config())
