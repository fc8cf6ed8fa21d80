"""Tests for ttc_jax.data.text_tfds: GSM8K/MATH TFDS builders from local JSONL files."""

import json
import os

import pytest

tt = pytest.importorskip("ttc_jax.data.text_tfds")

GSM_TRAIN = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {
        "question": "A car costs $1,200 and a bike $300. Total?",
        "answer": "1200+300=1500\n#### 1,500",
    },
]
GSM_TEST = [{"question": "What is 10 less 12?", "answer": "10-12=-2\n#### -2"}]
MATH_TRAIN = [
    {
        "problem": "Compute $1+1$.",
        "solution": "We get $\\boxed{2}$.",
        "answer": "2",
        "level": "Level 1",
        "subject": "Prealgebra",
        "unique_id": "train/prealgebra/1.json",
    },
    {
        "problem": "Simplify $\\frac{2}{4}$.",
        "solution": "It is $\\boxed{\\frac{1}{2}}$.",
        "level": 2,
        "type": "Algebra",
    },  # answer from \boxed, level int, "type" for subject
]
MATH_TEST = [
    {
        "problem": "P1",
        "solution": "\\boxed{3}",
        "answer": "3",
        "level": "Level 5",
        "subject": "Geometry",
        "unique_id": "test/geometry/1.json",
    },
    {
        "problem": "P2",
        "solution": "\\boxed{x+1}",
        "answer": "x+1",
        "level": "Level 4",
        "subject": "Algebra",
        "unique_id": "test/algebra/2.json",
    },
    {
        "problem": "P3",
        "solution": "\\boxed{\\{1,2\\}}",
        "level": "3",
        "subject": "Algebra",
        "unique_id": "test/algebra/3.json",
    },
]


def _write_jsonl(path, rows, blank_line=True):
  with open(path, "w") as f:
    for i, r in enumerate(rows):
      f.write(json.dumps(r) + "\n")
      if blank_line and i == 0:
        f.write("\n")  # blank lines are skipped


def _gsm_dir(tmp_path):
  d = tmp_path / "gsm8k"
  d.mkdir()
  _write_jsonl(d / "train.jsonl", GSM_TRAIN)
  _write_jsonl(d / "test.jsonl", GSM_TEST)
  return d


def _math_dir(tmp_path, test500=None):
  d = tmp_path / "math"
  d.mkdir()
  _write_jsonl(d / "train.jsonl", MATH_TRAIN)
  _write_jsonl(d / "test.jsonl", MATH_TEST)
  if test500 == "jsonl":
    _write_jsonl(d / "test500.jsonl", MATH_TEST[1:])
  elif test500 == "ids":
    (d / "test500_ids.txt").write_text("test/algebra/3.json\n\ntest/geometry/1.json\n")
  return d


def test_gsm8k_build_and_read_back(tmp_path):
  builder = tt.build_text_dataset("gsm8k", tmp_path / "tfds", _gsm_dir(tmp_path))
  train = tt.load_problems(builder, "train")
  assert [r["question"] for r in train] == [r["question"] for r in GSM_TRAIN]
  assert [r["solution"] for r in train] == [r["answer"] for r in GSM_TRAIN]
  assert [r["answer"] for r in train] == ["7", "1500"]
  assert train[0]["prompt"] == "Question: Tom has 3 apples and buys 4. How many?\nAnswer: "
  assert train[0]["level"] == "" and train[0]["subject"] == ""
  assert train[0]["unique_id"] == "train/1" and train[1]["unique_id"] == "train/3"
  test = tt.load_problems(builder, "test")
  assert len(test) == 1 and test[0]["answer"] == "-2"
  assert sorted(builder.info.splits) == ["test", "train"]
  assert isinstance(tt.load_split(builder, "train")[0]["question"], bytes)  # raw source
  # the version directory reads back the same, without the manual files
  assert tt.load_problems(os.fspath(builder.data_dir), "train") == train


def test_math_build_read_back_and_test500_jsonl(tmp_path):
  builder = tt.build_text_dataset(
      "math", tmp_path / "tfds", _math_dir(tmp_path, "jsonl"), prompt_template="Q: {question}\nA:"
  )
  train = tt.load_problems(builder, "train")
  assert train[0] == {
      "question": "Compute $1+1$.",
      "prompt": "Q: Compute $1+1$.\nA:",
      "solution": "We get $\\boxed{2}$.",
      "answer": "2",
      "level": "Level 1",
      "subject": "Prealgebra",
      "unique_id": "train/prealgebra/1.json",
  }
  assert train[1]["answer"] == "\\frac{1}{2}" and train[1]["level"] == "Level 2"
  assert train[1]["subject"] == "Algebra" and train[1]["unique_id"] == "train/3"
  test = tt.load_problems(builder, "test")
  assert [r["answer"] for r in test] == ["3", "x+1", "\\{1,2\\}"]
  assert test[2]["level"] == "Level 3"
  t500 = tt.load_problems(builder, "test500")
  assert [r["unique_id"] for r in t500] == ["test/algebra/2.json", "test/algebra/3.json"]
  args = dict(
      task="math",
      data_dir=tmp_path / "tfds",
      manual_dir=tmp_path / "math",
      prompt_template="Q: {question}\nA:",
  )
  assert tt.load_problems(args, "test500") == t500  # via tfds.data_source
  with pytest.raises(FileNotFoundError, match="not prepared"):
    tt.load_split(dict(args, prompt_template="{question}"), "train")


def test_math_test500_from_ids(tmp_path):
  builder = tt.build_text_dataset("math", tmp_path / "tfds", _math_dir(tmp_path, "ids"))
  t500 = tt.load_problems(builder, "test500")
  assert [r["unique_id"] for r in t500] == ["test/algebra/3.json", "test/geometry/1.json"]
  assert t500[1]["question"] == "P1" and t500[1]["prompt"] == "Problem:\nP1\n\nSolution:\n"


def test_math_without_test500_and_idempotent_configs(tmp_path):
  d = _math_dir(tmp_path)
  data_dir = tmp_path / "tfds"
  b1 = tt.build_text_dataset("math", data_dir, d)
  assert sorted(b1.info.splits) == ["test", "train"]
  with pytest.raises(ValueError, match="test500.*not in the dataset"):
    tt.load_split(b1, "test500")
  again = tt.build_text_dataset("math", data_dir, d)
  assert os.fspath(again.data_dir) == os.fspath(b1.data_dir)
  _write_jsonl(d / "test.jsonl", MATH_TEST[:2])  # new content -> new config directory
  b2 = tt.build_text_dataset("math", data_dir, d)
  assert os.fspath(b2.data_dir) != os.fspath(b1.data_dir)
  assert len(tt.load_problems(b2, "test")) == 2 and len(tt.load_problems(b1, "test")) == 3


def test_missing_manual_dir_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", None)
  d = _gsm_dir(tmp_path)
  os.remove(d / "test.jsonl")
  with pytest.raises(FileNotFoundError, match="test.jsonl"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", d)
  with pytest.raises(ValueError, match="unknown text task"):
    tt.build_text_dataset("svamp", tmp_path / "tfds", d)
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    tt.load_split(tmp_path / "nothing", "train")


def test_corrupt_json_line_names_file_and_line(tmp_path):
  d = _gsm_dir(tmp_path)
  with open(d / "train.jsonl", "a") as f:
    f.write('{"question": "broken", "answer": \n')
  with pytest.raises(ValueError, match=r"train\.jsonl:4: corrupt JSON"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", d)
  _write_jsonl(d / "train.jsonl", GSM_TRAIN, blank_line=False)
  with open(d / "train.jsonl", "a") as f:
    f.write("[1, 2]\n")
  with pytest.raises(ValueError, match=r"train\.jsonl:3: expected a JSON object"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", d)


@pytest.mark.parametrize(
    "task, row, message",
    [
        ("gsm8k", {"question": "q"}, r"test\.jsonl:1: missing field 'answer'"),
        ("gsm8k", {"answer": "#### 3"}, r"test\.jsonl:1: missing field 'question'"),
        ("gsm8k", {"question": "q", "answer": "no final marker 3"}, "no '#### N'"),
        ("gsm8k", {"question": "q", "answer": "#### "}, "empty final answer"),
        ("gsm8k", {"question": 5, "answer": "#### 3"}, "'question' should be str, got int"),
        ("math", {"problem": "p", "level": 1, "subject": "A"}, "missing field 'solution'"),
        (
            "math",
            {"problem": "p", "solution": "no box", "level": 1, "subject": "A"},
            "no 'answer' field and no",
        ),
        (
            "math",
            {"problem": "p", "solution": "\\boxed{1", "level": 1, "subject": "A"},
            "no 'answer' field and no",
        ),
        (
            "math",
            {"problem": "p", "solution": "\\boxed{1}", "subject": "A"},
            "missing field 'level'",
        ),
        (
            "math",
            {"problem": "p", "solution": "\\boxed{1}", "level": 1},
            "missing field 'subject' or 'type'",
        ),
        (
            "math",
            {"problem": "p", "solution": "\\boxed{1}", "level": [1], "subject": "A"},
            "'level' should be str/int",
        ),
    ],
)
def test_missing_or_bad_fields(tmp_path, task, row, message):
  d = _gsm_dir(tmp_path) if task == "gsm8k" else _math_dir(tmp_path)
  _write_jsonl(d / "test.jsonl", [row])
  with pytest.raises(ValueError, match=message):
    tt.build_text_dataset(task, tmp_path / "tfds", d)


def test_empty_splits(tmp_path):
  d = _gsm_dir(tmp_path)
  (d / "test.jsonl").write_text("\n\n")
  with pytest.raises(ValueError, match=r"test\.jsonl: split 'test' is empty"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", d)
  m = _math_dir(tmp_path, "ids")
  (m / "test500_ids.txt").write_text("\n")
  with pytest.raises(ValueError, match="split 'test500' is empty"):
    tt.build_text_dataset("math", tmp_path / "tfds2", m)
  (m / "test500_ids.txt").write_text("test/algebra/2.json\ntest/nope/9.json\n")
  with pytest.raises(ValueError, match=r"1 unique_id\(s\) not found.*test/nope/9\.json"):
    tt.build_text_dataset("math", tmp_path / "tfds2", m)


def test_prompt_template_is_validated(tmp_path):
  with pytest.raises(ValueError, match="question"):
    tt.build_text_dataset("gsm8k", tmp_path / "tfds", _gsm_dir(tmp_path), prompt_template="Q:")
