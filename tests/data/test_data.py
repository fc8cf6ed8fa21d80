"""Tests for ttc_jax.data: TFDS arith builder, numpy packing, grain pipeline."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ttc_jax.data import packing
from ttc_jax.tasks import arith
from ttc_jax.tokenizers import CharTokenizer
from conftest import REPO_ROOT

at = pytest.importorskip("ttc_jax.data.arith_tfds")
pipeline = pytest.importorskip("ttc_jax.data.pipeline")

LEVELS = "ops=1-3,digits=1"
ARGS = dict(levels=LEVELS, train_per_level=20, test_per_level=20, seed=0)
TOK = CharTokenizer()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, at.build_arith_dataset(data_dir, **ARGS)


def _expected(split, seed=0, n=20):
  return [
      dict(
          question=p.question,
          prompt=p.prompt,
          solution=p.solution,
          answer=p.answer,
          num_ops=p.level.num_ops,
          digits=p.level.digits,
          level=p.level.name,
      )
      for p in arith.generate(split, arith.parse_levels(LEVELS), n, seed)
  ]


def _segments(batch):
  """Checks the packing invariants of a batch; returns the (prompt, solution)
  texts of every example in it."""
  shapes = {v.shape for v in batch.values()}
  assert len(shapes) == 1 and set(batch) == set(packing.BATCH_KEYS)
  for k in packing.INT_KEYS:
    assert batch[k].dtype == np.int32, k
  assert batch["loss_mask"].dtype == np.float32
  out = []
  for r in range(batch["inputs"].shape[0]):
    inp, tgt, pos, seg, mask = (batch[k][r] for k in packing.BATCH_KEYS)
    pad = seg == 0
    assert not pad.any() or pad[np.argmax(pad) :].all(), "padding only at the end"
    assert (inp[pad] == 0).all() and (tgt[pad] == 0).all() and (mask[pad] == 0).all()
    for s in sorted(set(seg[~pad].tolist())):
      idx = np.nonzero(seg == s)[0]
      assert (np.diff(idx) == 1).all(), "segment contiguous"
      x, y, m = inp[idx], tgt[idx], mask[idx]
      np.testing.assert_array_equal(pos[idx], np.arange(idx.size))
      assert x[0] == TOK.BOS and y[-1] == TOK.EOS
      np.testing.assert_array_equal(x[1:], y[:-1])  # shifted within the segment
      # the mask covers exactly the solution and EOS targets (a suffix)
      assert m[-1] == 1 and (np.diff(m) >= 0).all()
      prompt, solution = TOK.decode(y[m == 0]), TOK.decode(y[m == 1])
      assert prompt.endswith("\n") and prompt.count("\n") == 1
      assert "Answer: " in solution and not solution.endswith("\n")
      out.append((prompt, solution))
  return out


# ---------------------------------------------------------------- TFDS builder
def test_round_trip_and_disjoint(built):
  data_dir, builder = built
  for split in ("train", "test"):
    src = at.load_split(builder, split)
    got = [at.decode_record(src[i]) for i in range(len(src))]
    assert got == _expected(split)
    assert isinstance(src[0]["question"], bytes)  # raw records hold bytes
  train = {r["question"] for r in at.load_problems(builder, "train")}
  test = {r["question"] for r in pipeline.load_test_problems(builder)}
  assert train and test and not train & test
  # the same data through tfds.data_source args and through a path
  assert at.load_problems(dict(data_dir=data_dir, **ARGS), "test") == _expected("test")
  assert at.load_problems(data_dir, "test") == _expected("test")
  assert at.load_problems(os.fspath(builder.data_dir), "test") == _expected("test")


def test_prepare_idempotent_and_config_per_params(built):
  data_dir, builder = built
  files = sorted(glob.glob(os.path.join(os.fspath(builder.data_dir), "*")))
  mtimes = [os.path.getmtime(f) for f in files]
  again = at.build_arith_dataset(data_dir, **ARGS)
  assert os.fspath(again.data_dir) == os.fspath(builder.data_dir)
  assert [os.path.getmtime(f) for f in files] == mtimes
  # spelling the same levels differently is the same config
  same = at.make_builder(data_dir, "1x1,2x1,3x1", 20, 20, 0)
  assert same.builder_config.name == builder.builder_config.name
  other = at.build_arith_dataset(data_dir, **dict(ARGS, seed=1))
  assert other.builder_config.name != builder.builder_config.name
  assert at.load_problems(other, "test") == _expected("test", seed=1)
  assert at.load_problems(other, "test") != at.load_problems(builder, "test")
  more = at.make_builder(data_dir, LEVELS, 20, 21, 0)
  assert more.builder_config.name not in (builder.builder_config.name, other.builder_config.name)
  # a TFDS root with two configs is ambiguous
  with pytest.raises(FileNotFoundError, match="2 prepared"):
    at.load_split(data_dir, "test")


def test_missing_and_corrupt_data_errors(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope"):
    at.load_split(missing, "train")
  with pytest.raises(FileNotFoundError, match="not prepared"):
    at.load_split(dict(data_dir=str(tmp_path), **ARGS), "train")
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    pipeline.make_train_iterator(str(tmp_path), TOK, 4, 64, seed=0)
  (tmp_path / "afile").write_text("x")
  with pytest.raises(NotADirectoryError, match="afile"):
    at.build_arith_dataset(str(tmp_path / "afile"), **ARGS)

  builder = at.build_arith_dataset(str(tmp_path), **dict(ARGS, train_per_level=3, test_per_level=3))
  vdir = os.fspath(builder.data_dir)
  shard = glob.glob(os.path.join(vdir, "*-train.array_record-*"))[0]
  with open(shard, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(RuntimeError, match="split 'train'.*" + vdir):
    at.load_split(builder, "train")
  os.remove(shard)
  with pytest.raises(RuntimeError, match=vdir):
    at.load_split(vdir, "train")
  meta = os.path.join(vdir, "metadata.json")
  with open(meta) as f:
    stored = json.load(f)
  with open(meta, "w") as f:
    json.dump(dict(stored, seed=123), f)
  with pytest.raises(RuntimeError, match="written with parameters"):
    at.make_builder(str(tmp_path), **dict(ARGS, train_per_level=3, test_per_level=3))
  with open(os.path.join(vdir, "dataset_info.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(RuntimeError, match=vdir):
    at.load_split(
        dict(data_dir=str(tmp_path), **dict(ARGS, train_per_level=3, test_per_level=3)), "test"
    )
  with pytest.raises(RuntimeError, match=vdir):
    at.load_split(vdir, "test")


# ---------------------------------------------------------------- numpy packing
def _pairs(n=40, seed=0):
  probs = arith.generate("train", arith.parse_levels(LEVELS), n, seed)
  return probs, [(TOK.encode(p.prompt), TOK.encode(p.solution)) for p in probs]


def test_make_example_mask():
  ex = packing.make_example([5, 6], [7, 8, 9], bos_id=1, eos_id=2)
  np.testing.assert_array_equal(ex["inputs"], [1, 5, 6, 7, 8, 9])
  np.testing.assert_array_equal(ex["targets"], [5, 6, 7, 8, 9, 2])
  np.testing.assert_array_equal(ex["loss_mask"], [0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("pack", [True, False])
def test_pack_examples_invariants(pack):
  probs, pairs = _pairs()
  rows = packing.pack_examples(pairs, seq_len=96, pack=pack)
  segs = _segments(rows)
  assert sorted(segs) == sorted((p.prompt, p.solution) for p in probs)
  if pack:
    assert rows["inputs"].shape[0] < len(pairs)
    assert rows["segment_ids"].max() > 1
  else:
    assert rows["inputs"].shape == (len(pairs), 96)
    assert set(np.unique(rows["segment_ids"])) == {0, 1}
  assert ((rows["segment_ids"] == 0) == (rows["positions"] == 0) & (rows["inputs"] == 0)).all()


def test_too_long_raises():
  _, pairs = _pairs()
  n = max(len(p) + len(s) + 1 for p, s in pairs)
  with pytest.raises(ValueError, match=f"needs {n} positions.*seq_len is {n - 1}"):
    packing.pack_examples(pairs, seq_len=n - 1)
  with pytest.raises(ValueError, match=f"seq_len is {n - 1}"):
    next(packing.iterate_batches(pairs, 4, n - 1, seed=0))
  packing.pack_examples(pairs, seq_len=n)  # exactly fits


def test_iterate_batches_fixed_deterministic():
  probs, pairs = _pairs()
  take = lambda seed, k=6: [
      b for _, b in zip(range(k), packing.iterate_batches(pairs, 4, 128, seed))
  ]
  a, b, c = take(0), take(0), take(1)
  for x in a:
    assert all(v.shape == (4, 128) for v in x.values())
    _segments(x)
  assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
  assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))
  one_epoch = list(packing.iterate_batches(pairs, 2, 128, seed=0, epochs=1, pack=False))
  assert len(one_epoch) == len(pairs) // 2
  with pytest.raises(ValueError, match="fewer than batch_size"):
    next(packing.iterate_batches(pairs[:2], 4, 128, seed=0, pack=False))


# ---------------------------------------------------------------- grain pipeline
def _grain_batches(builder, seed, k=5, **kw):
  it = pipeline.make_train_iterator(builder, TOK, 4, 96, seed, **kw)
  return [next(it) for _ in range(k)]


def test_grain_pipeline_shapes_and_determinism(built):
  _, builder = built
  a, b, c = (_grain_batches(builder, s) for s in (0, 0, 1))
  train = {(r["prompt"], r["solution"]) for r in at.load_problems(builder, "train")}
  for x in a:
    assert all(v.shape == (4, 96) for v in x.values())
    assert set(_segments(x)) <= train
  assert max(x["segment_ids"].max() for x in a) > 1  # really packed
  assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
  assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))
  for x in _grain_batches(builder, 0, k=2, pack=False):
    assert x["inputs"].shape == (4, 96) and x["segment_ids"].max() == 1
    _segments(x)


def test_grain_process_sharding(built):
  _, builder = built
  seen = []
  for p in range(2):
    batches = _grain_batches(builder, 0, k=8, process_index=p, process_count=2)
    assert all(v.shape == (2, 96) for x in batches for v in x.values())
    seen.append({s for x in batches for s in _segments(x)})
  assert seen[0] and seen[1] and not seen[0] & seen[1]
  with pytest.raises(ValueError, match="multiple of process_count"):
    pipeline.make_train_iterator(builder, TOK, 3, 96, 0, process_count=2)


def test_grain_too_long_raises(built):
  _, builder = built
  with pytest.raises(ValueError, match="seq_len is 20"):
    next(pipeline.make_train_iterator(builder, TOK, 4, 20, seed=0))


def test_data_package_imports_no_tfds_or_grain():
  code = (
      "import sys, ttc_jax.data; "
      "bad = [m for m in sys.modules if m.split('.')[0] in "
      "('tensorflow_datasets', 'grain', 'array_record', 'tensorflow')]; "
      "assert not bad, bad"
  )
  root = REPO_ROOT
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
