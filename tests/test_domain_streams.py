"""The two domains' training streams, through the real entry point (pipeline.train_iterator, as
the trainer builds them) over the prepared procedural benchmark: each domain draws its own
examples, in its own order, from its own seed, at its own position.

Batches hold one image; the test recovers which stored example (and whether flipped) each batch
is by comparing pixels with the prepared split.
"""

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax.data import pipeline  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

NUM_TRAIN = 8  # configs/test.py: data.procedural.num_train
STEPS = 2 * NUM_TRAIN  # two epochs


def _config(data_dir, seed=0, source="procedural/source"):
  config = tiny_training_config(data_dir, 6)
  config.seed = seed
  config.data.source = source
  config.data.global_batch = 1
  config.data.read_threads, config.data.read_buffer_batches = 1, 2
  return config


def _stored_images(data_dir, name):
  split, _ = pipeline.open_split(data_dir, name, "train")
  return [np.asarray(split[i]["image"]) for i in range(len(split))]


def _draws(batches, steps):
  """{domain: [one uint8 image per step]} of `steps` steps."""
  out = {"source": [], "target": []}
  for _ in range(steps):
    batch = next(batches)
    for domain, images in out.items():
      image = batch[domain]["image"][0, 0]
      images.append(np.round((image + 1.0) * 127.5).astype(np.uint8))
  return out


def _index_of(image, stored, what):
  """(example index, flipped) of a drawn image among the stored ones; fails if none."""
  for index, candidate in enumerate(stored):
    if np.array_equal(image, candidate):
      return index, False
    if np.array_equal(image, candidate[:, ::-1]):
      return index, True
  raise AssertionError(f"a {what} batch holds an image that is not in its own dataset")


def _order(images, stored, what):
  return [_index_of(image, stored, what) for image in images]


@pytest.fixture(scope="module")
def stored(procedural_data_dir):
  return {domain: _stored_images(procedural_data_dir, f"procedural/{domain}")
          for domain in ("source", "target")}


def _orders(data_dir, stored, seed=0, source="procedural/source"):
  draws = _draws(pipeline.train_iterator(_config(data_dir, seed, source), local_devices=1), STEPS)
  source_stored = stored["target"] if source == "procedural/target" else stored["source"]
  return (_order(draws["source"], source_stored, "source"),
          _order(draws["target"], stored["target"], "target"))


def test_each_domain_reads_its_own_dataset_once_per_epoch(procedural_data_dir, stored):
  """Source batches come from data.source, target batches from data.target (not the same
  stream), and each epoch of each domain is a permutation of its examples, reshuffled."""
  for order in _orders(procedural_data_dir, stored):
    epochs = [[index for index, _ in order[e * NUM_TRAIN:(e + 1) * NUM_TRAIN]] for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(NUM_TRAIN)), epochs
    assert epochs[0] != epochs[1]  # every epoch is shuffled anew


@pytest.mark.parametrize("seed", [0, 1])
def test_source_and_target_are_drawn_in_different_orders(procedural_data_dir, stored, seed):
  """Independent draws: the two domains' orders and flips differ (two permutations of 8
  examples agree by chance once in 40320), and config.seed changes both."""
  source, target = _orders(procedural_data_dir, stored, seed)
  for epoch in (slice(0, NUM_TRAIN), slice(NUM_TRAIN, STEPS)):
    assert [i for i, _ in source[epoch]] != [i for i, _ in target[epoch]]
  assert [f for _, f in source] != [f for _, f in target]
  other_source, other_target = _orders(procedural_data_dir, stored, seed + 2)
  assert other_source != source and other_target != target


def test_one_dataset_on_both_sides_gives_two_streams_and_the_target_ignores_the_source(
    procedural_data_dir, stored):
  """With data.source = data.target, the two streams still differ; and the target stream is
  the same whatever the source is (its draws do not depend on the other domain)."""
  same_source, same_target = _orders(procedural_data_dir, stored, source="procedural/target")
  assert same_source != same_target
  _, target = _orders(procedural_data_dir, stored)
  assert same_target == target


def test_each_domain_resumes_at_its_own_position(procedural_data_dir):
  """A state whose source sits after 1 batch and whose target sits after 4 resumes each domain
  where its own state says: one domain's position neither follows nor moves the other's."""
  config = _config(procedural_data_dir)
  batches = pipeline.train_iterator(config, local_devices=1)
  states, draws = [batches.get_state()], {"source": [], "target": []}  # states[k]: k steps
  for _ in range(6):
    step = _draws(batches, 1)
    states.append(batches.get_state())
    for domain in draws:
      draws[domain] += step[domain]
  mixed = {**states[4], "source": states[1]["source"]}
  resumed = pipeline.train_iterator(config, local_devices=1)
  resumed.set_state(mixed)
  assert resumed.get_state() == mixed
  again = _draws(resumed, 2)
  for got, want in zip(again["source"], draws["source"][1:3]):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(again["target"], draws["target"][4:6]):
    np.testing.assert_array_equal(got, want)
  assert resumed.get_state() == {**states[6], "source": states[3]["source"]}
