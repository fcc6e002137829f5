"""The configs the library itself needs: every default (default.py, with the procedural
benchmark's in procedural.py), the CPU config (cpu.py) and the demo's (demo.py).

The package never imports the repository's configs/; configs/ imports these (its default.py,
procedural.py, cpu.py and demo.py are these files for `--config configs/X.py`) and adds the
benchmarks' and the tests' configs.
"""

import os


def path(name: str) -> str:
  """The file of config `name` ("default", "demo", ...), a default for config_flags'
  `--config`, found wherever the package is installed."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
