"""PyTorch state_dict <-> Flax params for every GIO-Ada network.

All PyTorch layout facts live here: key names, OIHW vs HWIO kernels, the transposed-conv kernel
flip, DataParallel's `module.` prefix, and old CycleGAN checkpoints' InstanceNorm running stats.
Conversion is strict: an unknown, missing or mis-shaped key raises `LayoutMismatch` naming it,
unless the caller lists it (fnmatch patterns) in `allow_unexpected` / `allow_missing`; a
mis-shaped key listed in `allow_missing` counts as missing and keeps the template's value.
Error messages say what is wrong and suggest nothing a command line cannot do: a command that
converts a checkpoint adds its own advice (its flags, its config fields) to the message.

Only `load_torch_checkpoint` and `save_torch_checkpoint` need torch; everything else works on
dicts of numpy arrays.
"""

import fnmatch
import logging
import os
import pickle
import re
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
from flax import traverse_util

from gio_ada_jax.errors import MissingInput, UserError
from gio_ada_jax.models.task_net import VGG16_DEEPLAB_LAYERS

Params = Mapping[str, Any]
StateDict = Mapping[str, np.ndarray]

MAX_LISTED_PROBLEMS = 12  # a message lists this many mismatched keys, then counts the rest
RUNNING_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
DATA_PARALLEL_PREFIX = "module."


class ConversionError(UserError, ValueError):
  """A checkpoint cannot be read, or its state_dict does not fit the network."""


class UnsafeCheckpoint(ConversionError):
  """A `.pth` that pickles more than tensors and plain containers: refused, never unpickled."""


class NestedStateDict(ConversionError):
  """A `.pth` whose top level is not a state_dict (e.g. a training checkpoint holding one).

  `candidates`: top-level keys whose value is a dict of tensors (pass one as `key`).
  """

  def __init__(self, message: str, candidates: tuple[str, ...]):
    super().__init__(message)
    self.candidates = candidates


class LayoutMismatch(ConversionError):
  """A state_dict does not fit the layout: `problems` lists each key. Python callers may list
  keys to skip on purpose in torch_to_flax's `allow_missing` / `allow_unexpected`."""

  def __init__(self, network: str, problems: list[str], subject: str = "the state_dict",
               advice: str = ""):
    shown = problems[:MAX_LISTED_PROBLEMS]
    if len(problems) > len(shown):
      shown = shown + [f"... and {len(problems) - len(shown)} more"]
    super().__init__(f"{subject} does not fit {network!r} ({LAYOUT_DESCRIPTIONS.get(network, '')})"
                     ":\n  " + "\n  ".join(shown) + (f"\n{advice}" if advice else ""))
    self.network = network
    self.problems = tuple(problems)

  def explained(self, subject: str, advice: str) -> "LayoutMismatch":
    """The same mismatch naming what did not fit (e.g. a flag and its file) and what the
    caller's user can do about it (e.g. that command's flags)."""
    return LayoutMismatch(self.network, list(self.problems), subject, advice)


class Layer(NamedTuple):
  """One parameterised layer: its PyTorch module prefix, Flax param path and kind."""

  torch_prefix: str  # e.g. "model.19"
  flax_path: tuple[str, ...]  # e.g. ("up_0",)
  kind: str  # "conv" or "conv_transpose"


class Layout(NamedTuple):
  """How one PyTorch checkpoint format maps onto one Flax module's params."""

  layers: tuple[Layer, ...]
  # InstanceNorm positions: their running stats (2018 CycleGAN checkpoints) are dropped, as
  # CycleGAN's own loader does.
  norm_prefixes: tuple[str, ...] = ()
  # Keys of the format that the Flax network has no use for (torchvision's classifier).
  ignored_prefixes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- the layouts


def generator_layout(num_blocks: int) -> Layout:
  """CycleGAN ResnetGenerator (`model.N...`) <-> ImageTransformNet."""
  layers = [Layer("model.1", ("stem",), "conv"), Layer("model.4", ("down_0",), "conv"),
            Layer("model.7", ("down_1",), "conv")]
  norms = ["model.2", "model.5", "model.8"]
  for b in range(num_blocks):
    # ResnetBlock.conv_block: [pad, conv, IN, ReLU, pad, conv, IN] (no dropout in CycleGAN).
    layers += [Layer(f"model.{10 + b}.conv_block.1", (f"block_{b}_conv_0",), "conv"),
               Layer(f"model.{10 + b}.conv_block.5", (f"block_{b}_conv_1",), "conv")]
    norms += [f"model.{10 + b}.conv_block.2", f"model.{10 + b}.conv_block.6"]
  layers += [Layer(f"model.{10 + num_blocks}", ("up_0",), "conv_transpose"),
             Layer(f"model.{13 + num_blocks}", ("up_1",), "conv_transpose"),
             Layer(f"model.{17 + num_blocks}", ("head",), "conv")]
  norms += [f"model.{11 + num_blocks}", f"model.{14 + num_blocks}"]
  return Layout(tuple(layers), norm_prefixes=tuple(norms))


def patch_discriminator_layout(n_layers: int) -> Layout:
  """CycleGAN NLayerDiscriminator (`model.N...`) <-> PatchDiscriminator."""
  # Sequential: conv, LReLU, then per layer conv, IN, LReLU, then the final conv.
  indices = [0] + [2 + 3 * (n - 1) for n in range(1, n_layers + 2)]
  layers = tuple(Layer(f"model.{idx}", (f"conv_{n}",), "conv") for n, idx in enumerate(indices))
  norms = tuple(f"model.{idx + 1}" for idx in indices[1:-1])
  return Layout(layers, norm_prefixes=norms)


def fc_discriminator_layout(style: str) -> Layout:
  """AdaptSegNet FCDiscriminator (`conv1..4`, `classifier`) or ADVENT's Sequential (`0..8`)."""
  names = ("conv1", "conv2", "conv3", "conv4", "classifier")
  if style == "adaptsegnet":
    prefixes = names
  elif style == "advent":
    prefixes = ("0", "2", "4", "6", "8")  # LeakyReLUs sit at the odd indices.
  else:
    raise ValueError(f"unknown FCDiscriminator style {style!r}")
  return Layout(tuple(Layer(p, (n,), "conv") for p, n in zip(prefixes, names)))


def _vgg_feature_indices(with_pool4: bool) -> dict[str, int]:
  """`features.N` index of every VGG conv: DeeplabVGG drops pool4, torchvision keeps it."""
  indices, position = {}, 0
  for layer in VGG16_DEEPLAB_LAYERS:
    if layer == "pool":
      position += 1
      continue
    name = layer[0]
    if name == "conv5_1" and with_pool4:
      position += 1  # torchvision's pool4 (features.23), removed by DeeplabVGG.
    indices[name] = position
    position += 2  # conv, ReLU
  if not with_pool4:
    indices["fc6"], indices["fc7"] = position, position + 2
  return indices


def _aspp_layers(torch_module: str, flax_head: str, num_branches: int) -> list[Layer]:
  return [Layer(f"{torch_module}.conv2d_list.{i}", (flax_head, f"branch_{i}"), "conv")
          for i in range(num_branches)]


def task_net_layout(num_branches: int = 4, with_depth_head: bool = True) -> Layout:
  """GIO-Ada task net (`features.*`, `classifier.*`, `depth_classifier.*`) <-> TaskNet.

  Without the depth head this is AdaptSegNet's DeeplabVGG.
  """
  layers = [Layer(f"features.{idx}", ("encoder", name), "conv")
            for name, idx in _vgg_feature_indices(with_pool4=False).items()]
  layers += _aspp_layers("classifier", "seg_head", num_branches)
  if with_depth_head:
    layers += _aspp_layers("depth_classifier", "depth_head", num_branches)
  return Layout(tuple(layers))


def vgg16_layout() -> Layout:
  """torchvision vgg16 (`features.*`; `classifier.*` ignored) -> TaskNet's encoder convs."""
  layers = tuple(Layer(f"features.{idx}", ("encoder", name), "conv")
                 for name, idx in _vgg_feature_indices(with_pool4=True).items())
  return Layout(layers, ignored_prefixes=("classifier.",))


LAYOUT_DESCRIPTIONS = {
    "generator": "CycleGAN ResnetGenerator / GIO-Ada G_img (model.*) <-> ImageTransformNet",
    "task_net": "GIO-Ada task net (features.*, classifier.*, depth_classifier.*) <-> TaskNet",
    "deeplab_vgg": "AdaptSegNet DeeplabVGG (features.*, classifier.*) <-> TaskNet "
                   "without its depth head",
    "vgg16": "torchvision vgg16 ImageNet weights -> TaskNet encoder (classifier.* ignored)",
    "patch_discriminator": "CycleGAN NLayerDiscriminator (model.*) <-> PatchDiscriminator",
    "fc_discriminator": "AdaptSegNet FCDiscriminator (conv1-4, classifier) <-> FCDiscriminator",
    "fc_discriminator_advent": "ADVENT/DADA get_fc_discriminator (0.*-8.*) <-> FCDiscriminator",
}
LAYOUT_NAMES = tuple(LAYOUT_DESCRIPTIONS)


def _count(pattern: str, names: Iterable[str]) -> int:
  return len({m.group(1) for m in map(re.compile(pattern).fullmatch, names) if m})


def layout_for_params(name: str, params: Params) -> Layout:
  """The layout `name`, sized (blocks, layers, branches) from a Flax param tree."""
  try:
    return _layout_for_params(name, params)
  except KeyError as e:
    raise ConversionError(f"these Flax params have no {e} entry, so they are not a "
                          f"{name!r} network ({LAYOUT_DESCRIPTIONS.get(name, '')})") from e


def _layout_for_params(name: str, params: Params) -> Layout:
  top = list(params)
  if name == "generator":
    return generator_layout(_count(r"block_(\d+)_conv_0", top))
  if name == "patch_discriminator":
    return patch_discriminator_layout(_count(r"conv_(\d+)", top) - 2)
  if name in ("task_net", "deeplab_vgg"):
    return task_net_layout(_count(r"branch_(\d+)", params["seg_head"]),
                           with_depth_head=name == "task_net")
  return _fixed_layout(name)


def layout_for_state_dict(name: str, state_dict: StateDict) -> Layout:
  """The layout `name`, sized (blocks, layers, branches) from a PyTorch state_dict."""
  keys = list(state_dict)
  if name == "generator":
    return generator_layout(_count(r"model\.(\d+)\.conv_block\.1\.weight", keys))
  if name == "patch_discriminator":
    return patch_discriminator_layout(_count(r"model\.(\d+)\.weight", keys) - 2)
  if name in ("task_net", "deeplab_vgg"):
    return task_net_layout(_count(r"classifier\.conv2d_list\.(\d+)\.weight", keys),
                           with_depth_head=name == "task_net")
  return _fixed_layout(name)


def _fixed_layout(name: str) -> Layout:
  if name == "vgg16":
    return vgg16_layout()
  if name == "fc_discriminator":
    return fc_discriminator_layout("adaptsegnet")
  if name == "fc_discriminator_advent":
    return fc_discriminator_layout("advent")
  raise ValueError(f"unknown network layout {name!r}; choose one of {LAYOUT_NAMES}.")


# ------------------------------------------------------------------- tensor layout changes


def _torch_to_flax_kernel(weight: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
    return np.transpose(weight, (2, 3, 1, 0))
  # ConvTranspose2d stores (in, out, kh, kw); as a Flax ConvTranspose kernel (kh, kw, in, out)
  # it must also be flipped spatially (a transposed conv correlates with the flipped kernel).
  return np.transpose(weight, (2, 3, 0, 1))[::-1, ::-1]


def _flax_to_torch_kernel(kernel: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv":
    return np.transpose(kernel, (3, 2, 0, 1))
  return np.transpose(kernel[::-1, ::-1], (2, 3, 0, 1))


# --------------------------------------------------------------------------- conversions


def strip_data_parallel_prefix(state_dict: StateDict) -> dict[str, np.ndarray]:
  """Drop DataParallel's `module.` prefix when every key has it."""
  keys = list(state_dict)
  if keys and all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys):
    return {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def _matches(key: str, patterns: Iterable[str]) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _is_format_extra(key: str, layout: Layout) -> bool:
  """Keys a checkpoint of this format may carry that hold nothing for the Flax network."""
  if key.startswith(layout.ignored_prefixes):
    return True
  module, _, leaf = key.rpartition(".")
  return leaf in RUNNING_STAT_SUFFIXES and module in layout.norm_prefixes


def torch_to_flax(state_dict: StateDict, network: str, template: Params | None = None,
                  allow_missing: Iterable[str] = (),
                  allow_unexpected: Iterable[str] = ()) -> dict[str, Any]:
  """Convert a PyTorch state_dict to Flax params for `network` (see LAYOUT_DESCRIPTIONS).

  With a `template` (freshly initialised params of the Flax module), every converted tensor must
  have the template's shape and takes its dtype, and the template's leaves that this format does
  not hold (e.g. fc6/fc7 and the heads for "vgg16") keep their values, logged by name. Without a
  template the layout is sized from the state_dict itself and float32 arrays are returned.

  Keys that fit nowhere raise LayoutMismatch listing each; keys matching an fnmatch pattern of
  `allow_missing` / `allow_unexpected` are skipped on purpose instead (a mis-shaped key in
  `allow_missing` keeps the template's value, e.g. a classifier for another class set).
  """
  state_dict = {k: np.asarray(v) for k, v in strip_data_parallel_prefix(state_dict).items()}
  layout = (layout_for_params(network, template) if template is not None
            else layout_for_state_dict(network, state_dict))
  flat_template = traverse_util.flatten_dict(template) if template is not None else {}
  allow_missing, allow_unexpected = tuple(allow_missing), tuple(allow_unexpected)

  converted, problems, used = {}, [], set()
  for layer in layout.layers:
    for torch_leaf, flax_leaf in (("weight", "kernel"), ("bias", "bias")):
      key, path = f"{layer.torch_prefix}.{torch_leaf}", layer.flax_path + (flax_leaf,)
      if key not in state_dict:
        if not _matches(key, allow_missing):
          problems.append(f"missing key {key!r} (for Flax param {'/'.join(path)})")
        continue
      used.add(key)
      value = state_dict[key]
      expected_rank = 4 if flax_leaf == "kernel" else 1
      if value.ndim != expected_rank:
        problems.append(f"key {key!r} has shape {tuple(value.shape)}; a {layer.kind} "
                        f"{torch_leaf} has {expected_rank} dimensions")
        continue
      if flax_leaf == "kernel":
        value = _torch_to_flax_kernel(value, layer.kind)
      if flat_template:
        if path not in flat_template:
          problems.append(f"key {key!r} maps to Flax param {'/'.join(path)}, which the "
                          "network does not have")
          continue
        expected = flat_template[path]
        if tuple(value.shape) != tuple(expected.shape):
          if _matches(key, allow_missing):
            continue  # Treated as missing: e.g. a classifier for another class set.
          problems.append(
              f"key {key!r} has shape {tuple(state_dict[key].shape)}, which gives "
              f"{tuple(value.shape)} for Flax param {'/'.join(path)}; expected "
              f"{tuple(expected.shape)} (check width, classes and input channels)")
          continue
        value = np.asarray(value, dtype=expected.dtype)
      else:
        value = np.asarray(value, dtype=np.float32)
      converted[path] = np.ascontiguousarray(value)

  for key in state_dict:
    if key in used or _is_format_extra(key, layout) or _matches(key, allow_unexpected):
      continue
    problems.append(f"unexpected key {key!r} (shape {tuple(state_dict[key].shape)})")
  if problems:
    raise LayoutMismatch(network, problems)

  if flat_template:
    kept = sorted("/".join(p) for p in flat_template if p not in converted)
    if kept:
      logging.info("%s: kept at initialisation: %s", network, ", ".join(kept))
    merged = dict(flat_template)
    merged.update(converted)
    return traverse_util.unflatten_dict(merged)
  return traverse_util.unflatten_dict(converted)


def flax_to_torch(params: Params, network: str) -> dict[str, np.ndarray]:
  """Convert Flax params to a PyTorch state_dict (numpy arrays) for `network`.

  Every Flax param must be covered by the layout: nothing is dropped silently.
  """
  flat = {p: np.asarray(v) for p, v in traverse_util.flatten_dict(params).items()}
  layout = layout_for_params(network, params)
  state_dict, covered = {}, set()
  for layer in layout.layers:
    for torch_leaf, flax_leaf in (("weight", "kernel"), ("bias", "bias")):
      path = layer.flax_path + (flax_leaf,)
      if path not in flat:
        raise ConversionError(f"Flax params for {network!r} lack {'/'.join(path)}")
      value = flat[path]
      if flax_leaf == "kernel":
        value = _flax_to_torch_kernel(value, layer.kind)
      state_dict[f"{layer.torch_prefix}.{torch_leaf}"] = np.array(value)  # writable, C order
      covered.add(path)
  extra = sorted("/".join(p) for p in flat if p not in covered)
  if extra:
    raise ConversionError(f"Flax params {extra} have no place in the {network!r} layout "
                          f"({LAYOUT_DESCRIPTIONS[network]}).")
  return state_dict


# ------------------------------------------------------------------------- .pth files


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOL_OPCODE = b"\x80"  # how torch's legacy format (a pickle) starts
RESAVE_ADVICE = ("save the weights alone as plain tensors where the file was made: "
                 "torch.save(model.state_dict(), 'weights.pth')")


def load_torch_checkpoint(path: str, key: str | None = None) -> dict[str, np.ndarray]:
  """Read a `.pth` state_dict as numpy arrays, without unpickling arbitrary objects.

  `weights_only=True` lets torch.load build tensors and plain containers only, so a checkpoint
  from the internet cannot run code: one that pickles anything else raises UnsafeCheckpoint
  (it is refused, whatever its source). `key` picks a nested state_dict (e.g. "state_dict");
  without it a nested one raises NestedStateDict. An empty, truncated or foreign file raises
  ConversionError naming the file and what it is.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"Reading {path} needs PyTorch: pip install torch==2.13.0") from e
  _check_is_file(path)
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's own message advises weights_only=False or allowlisting the global: never passed
    # on, since either would run the file's code.
    raise UnsafeCheckpoint(_refusal(path, str(e))) from None
  except Exception as e:  # torch raises RuntimeError, EOFError, KeyError... for bad files
    raise ConversionError(_unreadable(path, e)) from None
  if key is not None:
    if not isinstance(loaded, Mapping) or key not in loaded:
      raise ConversionError(f"{path}: has no entry {key!r} "
                            f"(top-level keys: {_describe_keys(loaded)})")
    loaded = loaded[key]
  if not isinstance(loaded, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in loaded.values()):
    raise _nested(path, loaded, torch.Tensor)
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
          for k, v in loaded.items()}


def _check_is_file(path: str) -> None:
  if not os.path.exists(path):
    raise MissingInput(f"{path}: no such file (a PyTorch .pth state_dict was expected).")
  if os.path.isdir(path):
    raise ConversionError(f"{path}: is a folder, not a PyTorch .pth file.")
  if os.path.getsize(path) == 0:
    raise ConversionError(f"{path}: is empty (0 bytes), not a PyTorch checkpoint; the download "
                          "or copy that made it did not finish. Fetch the file again.")


def _refusal(path: str, torch_message: str) -> str:
  """Why `path` is refused, naming the Python global torch's weights-only reader met."""
  found = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", torch_message)
  if found:
    what = f"it holds pickled Python objects, not only tensors (it references {found.group(1)})"
    trusted = "the file comes from a source you trust"
  else:
    what = ("its pickle holds what torch's weights-only loader does not accept: objects "
            "beyond tensors and plain containers, or damaged data")
    trusted = "the file is intact and comes from a source you trust"
  return (f"{path}: refused: {what}. Unpickling such a file can run any code, so this package "
          "never does (it reads .pth files with torch's weights-only loader). If "
          f"{trusted}, {RESAVE_ADVICE}, and pass that file instead.")


def _unreadable(path: str, error: Exception) -> str:
  """What `path` is, when torch.load fails on it other than by refusing it."""
  with open(path, "rb") as f:
    head = f.read(8)
  cause = str(error).split(". ")[0].strip() or type(error).__name__
  if head.startswith(ZIP_MAGIC):
    return (f"{path}: is a zip archive that torch cannot read as a checkpoint ({cause}): it is "
            "truncated or damaged, or not written by torch.save. Fetch or copy it again.")
  if head.startswith(PICKLE_PROTOCOL_OPCODE):
    return (f"{path}: looks like a checkpoint in torch's legacy (pickle) format but cannot be "
            f"read to the end ({type(error).__name__}{': ' + cause if str(error) else ''}): it "
            "is truncated or damaged. Fetch or copy it again.")
  return (f"{path}: is not a PyTorch checkpoint: it starts with {head!r}, neither torch.save's "
          "zip archive nor its legacy pickle format. Pass the .pth file torch.save wrote.")


def _nested(path: str, loaded: Any, tensor_type: type) -> NestedStateDict:
  """The error for a file whose top level is not a dict of tensors."""
  candidates = ()
  if isinstance(loaded, Mapping):
    candidates = tuple(str(k) for k, v in loaded.items() if isinstance(v, Mapping) and v
                       and all(isinstance(t, tensor_type) for t in v.values()))
  described = (f"{path}: is not a plain state_dict of tensors (top-level keys: "
               f"{_describe_keys(loaded)})")
  if not candidates:
    return NestedStateDict(f"{described}. Pass a .pth holding a state_dict: a dict of "
                           "parameter names to tensors.", candidates)
  # The file loaded weights-only, so reading it again to save the entry alone is safe.
  resave = (f"python -c \"import torch; torch.save(torch.load({path!r}, weights_only=True)"
            f"[{candidates[0]!r}], 'weights.pth')\"")
  return NestedStateDict(
      f"{described}; the weights seem to be under {', '.join(map(repr, candidates))}. Save "
      f"that entry alone ({resave}) and pass weights.pth.", candidates)


def _describe_keys(obj: Any) -> str:
  if not isinstance(obj, Mapping):
    return f"<a {type(obj).__name__}, not a dict>"
  keys = list(obj)
  return ", ".join(map(str, keys[:8])) + (" ..." if len(keys) > 8 else "")


def save_torch_checkpoint(state_dict: StateDict, path: str) -> None:
  """Write a numpy state_dict as a `.pth` file that PyTorch's load_state_dict accepts."""
  import torch  # pylint: disable=g-import-not-at-top

  def to_tensor(value):
    value = np.array(value)  # A C-contiguous copy that keeps 0-d arrays 0-d.
    if value.dtype.name == "bfloat16":  # numpy's bfloat16 (ml_dtypes) is unknown to torch.
      return torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(value)

  torch.save({k: to_tensor(v) for k, v in state_dict.items()}, path)
