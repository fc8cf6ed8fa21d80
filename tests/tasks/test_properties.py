"""Property-based tests (hypothesis) of the code that reads untrusted text.

The tokenizer, the answer parser and the step checker see model-written text: on random
and adversarial strings (huge numbers, deep parentheses, very long lines, unicode, empty)
they never raise beyond their documented errors, finish within a time limit, and never
execute anything (builtins eval/exec/compile are replaced by raisers during each call).
Generated questions are solved correctly (an independent evaluator in this file) and
their canonical solutions pass the checker. A corrupt JSON/JSONL artifact raises a
ValueError naming the file (and line).
"""

import builtins
import contextlib
import datetime
import json
import os
import re
import signal
import tempfile
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ttc_jax import io_utils
from ttc_jax.tasks import arith
from ttc_jax.tasks.arith import check as arith_check
from ttc_jax.tokenizers import ARITH_ALPHABET, CharTokenizer

SETTINGS = settings(
    max_examples=200,
    deadline=datetime.timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HARD_LIMIT_S = 10.0  # a call that runs this long is a hang, whatever the deadline says
TOK = CharTokenizer()


# --- guards ------------------------------------------------------------------------------


class Executed(AssertionError):
  pass


def _forbidden(name):
  def f(*args, **kwargs):
    raise Executed(f"builtins.{name} was called")

  return f


@contextlib.contextmanager
def _no_exec_no_hang(limit_s: float = HARD_LIMIT_S):
  """eval/exec/compile/os.system raise while inside; SIGALRM ends a call over `limit_s`."""
  saved = {n: getattr(builtins, n) for n in ("eval", "exec", "compile")}
  saved_system = os.system
  alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
  if alarm:

    def on_alarm(signum, frame):
      raise TimeoutError(f"call did not finish within {limit_s}s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
  for n in saved:
    setattr(builtins, n, _forbidden(n))
  os.system = _forbidden("os.system")
  t0 = time.perf_counter()
  try:
    yield
  finally:
    for n, f in saved.items():
      setattr(builtins, n, f)
    os.system = saved_system
    if alarm:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, old_handler)
  assert time.perf_counter() - t0 < limit_s


# --- strategies ----------------------------------------------------------------------------

ARITH_CHARS = "0123456789+-*()=\n Answer:"
huge_number = st.integers(1, 30_000).map(lambda n: "9" * n)
signed_huge = st.tuples(st.sampled_from(["", "-", "+"]), huge_number).map("".join)
nested = st.tuples(
    st.integers(0, 3_000), st.integers(0, 3_000), st.sampled_from(["1", "1+2", ""])
).map(lambda t: "(" * t[0] + t[2] + ")" * t[1])
long_line = st.tuples(
    st.sampled_from(["1+", "1+1=2", "-", "9*", "Answer: ", " ", "(", "\n"]), st.integers(1, 20_000)
).map(lambda t: t[0] * t[1])
unicode_digits = st.sampled_from(
    [
        "٣+٤",
        "１２*３",
        "Answer: ٧",
        "Answer: ７",
        "2²",
        "½+1",
        "1\u200b+1",
        "−3",
        "Answer:\u00a05",
        "Answer: 5\u2028",
        "Answer: 1_000",
        "Answer: 0x10",
        "Answer: 1e3",
    ]
)
arith_like = st.text(alphabet=ARITH_CHARS, max_size=400)
adversarial_piece = st.one_of(
    st.text(max_size=200),
    arith_like,
    huge_number,
    signed_huge,
    nested,
    long_line,
    unicode_digits,
    st.just(""),
)
adversarial = st.one_of(
    adversarial_piece,
    st.lists(adversarial_piece, max_size=8).map("\n".join),
    st.tuples(st.just("Answer: "), signed_huge).map("".join),
    st.lists(st.just("1+1=2"), min_size=60, max_size=300).map("\n".join),
)


@st.composite
def problems(draw):
  level = arith.Level(draw(st.integers(1, arith.MAX_OPS)), draw(st.integers(1, arith.MAX_DIGITS)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  return arith.make_problem(rng, level, paren_prob=draw(st.sampled_from([0.0, 0.3, 0.8])))


def _reference_value(q: str) -> int:
  """Recursive-descent evaluation with the usual precedence (independent of arith.solve)."""
  toks = re.findall(r"\d+|[-+*()]", q)
  assert "".join(toks) == q
  pos = 0

  def peek():
    return toks[pos] if pos < len(toks) else None

  def take():
    nonlocal pos
    pos += 1
    return toks[pos - 1]

  def factor():
    if peek() == "(":
      take()
      v = expr()
      assert take() == ")"
      return v
    if peek() == "-":
      take()
      return -int(take())
    return int(take())

  def term():
    v = factor()
    while peek() == "*":
      take()
      v *= factor()
    return v

  def expr():
    v = term()
    while peek() in ("+", "-"):
      v = v + term() if take() == "+" else v - term()
    return v

  v = expr()
  assert pos == len(toks)
  return v


# --- tokenizer -----------------------------------------------------------------------------


@SETTINGS
@given(st.text(alphabet=ARITH_ALPHABET, max_size=500), st.booleans(), st.booleans())
def test_tokenizer_round_trip(text, bos, eos):
  with _no_exec_no_hang():
    ids = TOK.encode(text, add_bos=bos, add_eos=eos)
    assert len(ids) == len(text) + bos + eos
    assert all(0 <= i < TOK.vocab_size for i in ids)
    assert TOK.decode(ids) == text
    toks, lens = TOK.encode_batch([text, text[: len(text) // 2]], len(text) + 2)
    assert TOK.decode_batch(toks, lens) == [text, text[: len(text) // 2]]


@SETTINGS
@given(
    st.text(alphabet=ARITH_ALPHABET, max_size=300),
    st.characters(exclude_characters=ARITH_ALPHABET, exclude_categories=("Cs",)),
    st.text(max_size=300),
)
@example("", "\x00", "")
@example("Answer: ", "é", "")
@example("1" * 5000, "٣", "x")
def test_tokenizer_names_the_first_foreign_character(prefix, bad, suffix):
  with _no_exec_no_hang():
    with pytest.raises(ValueError) as e:
      TOK.encode(prefix + bad + suffix)
  msg = str(e.value)
  assert repr(bad) in msg and f"at position {len(prefix)} " in msg and "alphabet" in msg


@SETTINGS
@given(st.lists(st.integers(-(2**40), 2**40), max_size=300), st.booleans())
def test_tokenizer_decode_of_any_ids(ids, stop):
  with _no_exec_no_hang():
    text = TOK.decode(ids, stop_at_eos=stop)
    assert isinstance(text, str) and len(text) <= len(ids)
    strict = CharTokenizer(unknown=None)
    outside = [i for i in ids if i >= TOK.vocab_size or i < 0]
    if stop and TOK.EOS in ids:
      outside = [i for i in ids[: ids.index(TOK.EOS)] if i >= TOK.vocab_size or i < 0]
    if outside:
      with pytest.raises(ValueError, match="outside the vocabulary"):
        strict.decode(ids, stop_at_eos=stop)
    else:
      assert strict.decode(ids, stop_at_eos=stop) == text


# --- answers -------------------------------------------------------------------------------


@SETTINGS
@given(adversarial)
@example("")
@example("Answer: " + "9" * 100_000)
@example("Answer: 5\nAnswer: -7\n")
@example("\n" * 100_000)
def test_extract_answer_never_raises(text):
  with _no_exec_no_hang():
    a = arith.extract_answer(text)
  assert a is None or re.fullmatch(r"[+-]?[0-9]+", a)
  if a is not None:
    assert any(line.strip().startswith("Answer:") for line in text.split("\n"))


@SETTINGS
@given(
    st.one_of(st.none(), adversarial, st.integers().map(str)),
    st.one_of(st.none(), adversarial, st.integers().map(str)),
)
@example("9" * 999, "9" * 999)
@example("9" * 5000, "9" * 5000)
@example(" 007", "+7")
@example("٣", "3")
def test_equivalent_never_raises_and_is_symmetric(a, b):
  with _no_exec_no_hang():
    r = arith.equivalent(a, b)
    assert isinstance(r, bool) and r == arith.equivalent(b, a)
    if isinstance(a, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,300}\s*", a):
      assert arith.equivalent(a, a)
  if r:
    assert re.fullmatch(r"\s*[+-]?[0-9]+\s*", a) and int(a) == int(b)
  for x in (1, 1.0, b"1", ["1"]):  # non-strings are never equal, never an error
    assert arith.equivalent(x, "1") is False


# --- solving generated questions -------------------------------------------------------------


@SETTINGS
@given(problems())
def test_solve_generated_questions(p):
  with _no_exec_no_hang():
    steps, answer = arith.solve(p.question)
    assert (steps, answer) == (p.steps, p.answer)
    assert answer == _reference_value(p.question)
    assert len(steps) == arith.num_ops(p.question) == p.level.num_ops
    assert arith.extract_answer(p.solution) == str(answer)
    assert arith.equivalent(arith.extract_answer(p.solution), str(answer))
    assert arith.is_correct(p.solution, answer)
    assert TOK.decode(TOK.encode(p.prompt + p.solution)) == p.prompt + p.solution
    chk = arith_check.check_solution(p.question, p.solution)
  assert chk.all_correct and chk.first_error is None and chk.steps == p.steps


@SETTINGS
@given(problems(), st.data())
def test_check_solution_finds_the_first_wrong_line(p, data):
  k = data.draw(st.integers(0, len(p.steps) - 1))
  delta = data.draw(st.integers(1, 10**6))
  head, _, value = p.steps[k].rpartition("=")
  steps = list(p.steps)
  steps[k] = f"{head}={int(value) + delta}"
  with _no_exec_no_hang():
    chk = arith_check.check_solution(p.question, arith.format_solution(steps, p.answer))
  assert chk.first_error == k and not chk.all_correct
  assert chk.step_correct[:k] == (True,) * k and chk.prefix_correct[k:] == (False,) * (
      len(steps) - k
  )


# --- the checker on model text --------------------------------------------------------------


def _check_invariants(chk, text):
  n = len(chk.steps)
  assert len(chk.step_correct) == len(chk.prefix_correct) == n
  assert chk.num_lines <= arith.MAX_LINES and n <= chk.num_lines
  assert (chk.first_error is None) == all(chk.step_correct)
  first = n if chk.first_error is None else chk.first_error
  assert all(chk.prefix_correct[:first]) and not any(chk.prefix_correct[first:])
  assert chk.answer is None or re.fullmatch(r"[+-]?[0-9]+", chk.answer)
  if chk.all_correct:
    assert chk.answer_correct and chk.complete
  assert isinstance(chk.answer_correct, bool) and isinstance(chk.complete, bool)
  for s in chk.steps:
    assert isinstance(s, str)


@SETTINGS
@given(problems(), adversarial)
@example(
    arith.make_problem(np.random.default_rng(0), arith.Level(3, 1)), "Answer: " + "9" * 100_000
)
@example(arith.make_problem(np.random.default_rng(1), arith.Level(12, 3)), "1+1=2\n" * 10_000)
@example(arith.make_problem(np.random.default_rng(2), arith.Level(1, 1)), "")
def test_check_solution_on_adversarial_text(p, text):
  with _no_exec_no_hang():
    chk = arith_check.check_solution(p.question, text)
  _check_invariants(chk, text)


@SETTINGS
@given(problems(), adversarial, st.integers(0, 12))
def test_check_solution_on_corrupted_canonical_solutions(p, junk, cut):
  """Canonical lines with junk spliced in: the checker stays consistent."""
  lines = list(p.steps) + [f"Answer: {p.answer}"]
  lines.insert(min(cut, len(lines)), junk)
  text = "\n".join(lines)
  with _no_exec_no_hang():
    chk = arith_check.check_solution(p.question, text)
  _check_invariants(chk, text)
  if cut >= len(lines) - 1:  # junk after the Answer line is ignored
    assert chk.all_correct


@SETTINGS
@given(adversarial)
@example("9" * 5000 + "+1")
@example("(" * 5000 + "1" + ")" * 5000)
@example("(" * 50 + "1+2")
@example("1+2" + ")" * 50)
@example("")
@example("1 + 2")
@example("__import__('os').system('true')")
def test_malformed_questions_raise_value_error_only(q):
  """A question is trusted input; a malformed one raises ValueError, nothing else."""
  with _no_exec_no_hang():
    try:
      steps, answer = arith.solve(q)
    except ValueError:
      with pytest.raises(ValueError):
        arith_check.check_solution(q, "Answer: 1")
      return
    text = arith.format_solution(steps, answer)
    chk = arith_check.check_solution(q, text)
  _check_invariants(chk, text)
  if max(len(line) for line in text.split("\n")) <= arith.MAX_LINE_CHARS:
    assert chk.all_correct  # (longer lines are wrong by design: bounded work)
  if len(q) < 300:  # the reference evaluator recurses per parenthesis
    assert answer == _reference_value(q)


# --- JSON artifacts ---------------------------------------------------------------------------

not_json = st.one_of(
    st.sampled_from(
        [
            '{"step": 5, "loss": 1.',
            "{",
            "[1, 2",
            '"abc',
            "nul",
            "{'a': 1}",
            '{"a": 1} x',
            "\x00",
            "}",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=50),
).filter(lambda s: s.strip() and not _parses(s))


def _parses(s):
  try:
    json.loads(s)
    return True
  except ValueError:
    return False


@settings(SETTINGS, max_examples=100)
@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.floats(allow_nan=False)),
        min_size=1,
        max_size=20,
    ),
    st.data(),
)
def test_corrupt_json_lines_are_named_by_file_and_line(rows, data):
  k = data.draw(st.integers(0, len(rows)))
  junk = data.draw(not_json)
  lines = [json.dumps(r) for r in rows]
  assert [json.loads(x) for x in lines] == rows
  lines.insert(k, junk)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "rows.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + data.draw(st.sampled_from(["", "\n"])))
    with _no_exec_no_hang():
      with pytest.raises(ValueError, match=rf"corrupt JSON line {k + 1} in {re.escape(path)}"):
        io_utils.read_jsonl(path)
      with open(path, "w") as f:
        f.write(junk)
      with pytest.raises(ValueError, match=f"corrupt JSON file {re.escape(path)}"):
        io_utils.read_json(path)
