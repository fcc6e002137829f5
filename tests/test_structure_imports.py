"""The package's own imports, read from the source with ast: every import points down the
layers (or within one), its modules' imports of each other form no cycle, and no function
imports one of its modules, except the few allowed below for a heavy optional dependency."""

import ast
from pathlib import Path

PACKAGE = "gio_ada_jax"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# (importing module, imported module): the only function-level imports of the package's own
# modules, each for a heavy optional dependency that a plain run must not need.
FUNCTION_LEVEL_ALLOWED = {
    ("gio_ada_jax.interop.parity", "gio_ada_jax.interop.torch_ref"):
        "torch_ref imports torch (optional, [torch] extra); parity's JAX side runs without it",
}


# The layers, lowest first: a module imports only from its own layer or lower ones. A module
# belongs to the layer of the longest prefix listed (docs/development.md, "Layers").
LAYERS = (
    ("foundations", ("gio_ada_jax", "gio_ada_jax.errors", "gio_ada_jax.files", "gio_ada_jax.cli",
                     "gio_ada_jax.workdir", "gio_ada_jax.images", "gio_ada_jax.distributed",
                     "gio_ada_jax.variants", "gio_ada_jax.parallel")),
    ("configs", ("gio_ada_jax.configs", "gio_ada_jax.config_checks")),
    ("networks and data", ("gio_ada_jax.models", "gio_ada_jax.data")),
    ("training", ("gio_ada_jax.train", "gio_ada_jax.interop", "gio_ada_jax.interop.convert",
                  "gio_ada_jax.interop.torch_ref")),
    ("stages", ("gio_ada_jax.eval", "gio_ada_jax.cyclegan")),
    ("commands", ("gio_ada_jax.trainer", "gio_ada_jax.experiments", "gio_ada_jax.demo",
                  "gio_ada_jax.interop.parity")),
)


def layer_of(module: str) -> int:
  """The index in LAYERS of `module`'s longest listed prefix."""
  matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
             for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
  assert matches, f"{module} is in no layer: add it to LAYERS"
  return max(matches)[1]


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, ast.Module]:
  return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(ROOT.rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
  """The package modules an import statement names: `import X`, and for `from X import y` X.y
  when that is a module, else X."""
  if isinstance(node, ast.Import):
    return {alias.name for alias in node.names if alias.name in known}
  base = node.module or ""
  if node.level or not (base == PACKAGE or base.startswith(PACKAGE + ".")):
    return set()
  submodules = {f"{base}.{alias.name}" for alias in node.names} & known
  return submodules | ({base} & known if len(submodules) < len(node.names) else set())


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
  """Imports run when the module is imported (outside functions and classes)."""
  found, stack = [], list(tree.body)
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      found.append(node)
    elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
      stack.extend(ast.iter_child_nodes(node))
  return found


def function_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
  module_level = {id(n) for n in module_level_imports(tree)}
  return [n for n in ast.walk(tree)
          if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in module_level]


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
  """Module -> the package modules it imports, at module level or inside functions (a cycle
  through a function's import is a cycle all the same)."""
  known = set(modules)
  graph = {}
  for name, tree in modules.items():
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        edges |= imported(node, known)
    # Importing a.b.c runs a/__init__ and a.b/__init__ first.
    graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle as [m1, m2, ..., m1], or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for succ in sorted(graph.get(node, ())):
      if state.get(succ) == 1:
        return path[path.index(succ):] + [succ]
      if succ not in state:
        cycle = visit(succ)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_walk_sees_the_package():
  modules = package_modules()
  assert len(modules) > 40 and "gio_ada_jax.models" in modules
  graph = import_graph(modules)
  assert "gio_ada_jax.models.layers" in graph["gio_ada_jax.models.generator"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_points_down_or_within_a_layer():
  graph = import_graph(package_modules())
  upward = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
  assert not upward, "imports up the layers:\n" + "\n".join(upward)
  assert layer_of("gio_ada_jax.interop.parity") == len(LAYERS) - 1  # the longest prefix wins
  assert layer_of("gio_ada_jax.train.loop") < layer_of("gio_ada_jax.eval.evaluate")


def test_no_import_cycle():
  cycle = find_cycle(import_graph(package_modules()))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_level_import_of_the_package():
  modules = package_modules()
  known = set(modules)
  found = {(name, target) for name, tree in modules.items()
           for node in function_level_imports(tree) for target in imported(node, known)}
  unexpected = sorted(found - set(FUNCTION_LEVEL_ALLOWED))
  assert not unexpected, ("imports inside functions between the package's own modules (move "
                          f"them to the top, or allow them with the reason): {unexpected}")
  assert set(FUNCTION_LEVEL_ALLOWED) <= found, "allowed but gone: " + str(
      sorted(set(FUNCTION_LEVEL_ALLOWED) - found))
