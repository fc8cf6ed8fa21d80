"""MATH answers out of model text: ``\\boxed{}`` contents, answer cues, final math.

``extract_math_answer(text)`` tries, in order:

1. boxes: the content of the last top-level ``\\boxed{...}`` / ``\\fbox{...}`` /
   ``\\boxed N``; boxes just before it separated only by commas, "and"/"or",
   ``$`` or ``\\quad`` join it as one list (``\\boxed{1}, \\boxed{2}`` -> ``1, 2``).
   An unbalanced last box (a truncated generation) gives None (never replaced
   by a guess from the rest of the text);
2. the last answer cue ("final answer is", "answer is", "Answer:", "Answer" before
   math): the rest of its line (or the next non-empty line), "I hope it is correct"
   cut, and when that rest is a sentence ("The largest $n$ is 34.") read as in rule 4;
3. the math segment (``\\[..\\]``, ``$$..$$``, ``\\(..\\)``, ``$..$``) the text ends with;
4. else the final sentence (of the last line), read as words: its last ``**bold**``
   part, else the first math segment or number after its last "is"/"are"/"has"/"="/...,
   else its last math segment, else its last number ("Therefore, the perimeter is 126
   inches." -> ``126``).

Pure string processing with regular expressions that run in linear time, no sympy.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1000  # longer answers are not normalised (compared as strings)
TAIL_CHARS = 2000  # how far from the end a final math segment is looked for

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BOX_SPACE_RE = re.compile(r" +([^$\s]+)")
_SPACES_RE = re.compile(r" *")
_JOIN_RE = re.compile(
    r"(?:[\s,;$.]|\\\(|\\\)|\\\[|\\\]|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}"
    r"|\band\b|\bor\b|(?<![A-Za-z])[A-Za-z](?:_\d)?\s*=)*"
)


def match_brace(s: str, start: int) -> int:
  """Index just past the ``}`` closing the ``{`` at ``start``, or -1.
  Escaped braces ``\\{``/``\\}`` do not count."""
  depth, i, n = 0, start, len(s)
  while i < n:
    c = s[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return i + 1
    i += 1
  return -1


def boxes(text: str) -> list[tuple[int, int, str]] | None:
  """``(start, end, content)`` of every top-level box in ``text``; None when the
  last box is unbalanced. A box nested inside another one is part of the outer."""
  if not isinstance(text, str):
    return None
  found, pos = [], 0
  while True:
    m = _BOX_RE.search(text, pos)
    if m is None:
      return found
    i = m.end()
    j = _SPACES_RE.match(text, i).end()
    if j < len(text) and text[j] == "{":
      end = match_brace(text, j)
      if end < 0:
        return None
      found.append((m.start(), end, text[j + 1 : end - 1]))
      pos = end
    elif j > i:
      tail = _BOX_SPACE_RE.match(text, i)
      if tail is None:
        return None
      found.append((m.start(), tail.end(), tail.group(1)))
      pos = i + 1
    else:
      pos = i


def last_boxed(text: str) -> str | None:
  """Content of the last top-level ``\\boxed{...}``/``\\fbox{...}``/``\\boxed N``.

  Nested braces are matched; a box nested inside another box is part of the
  outer one. An unbalanced last box (a truncated generation) gives None.
  """
  found = boxes(text)
  return found[-1][2] if found else None


def _joined_boxes(found: list[tuple[int, int, str]], text: str) -> str:
  """The last box's content, with the boxes just before it that only connectors
  separate from it (a list written as several boxes) joined by ", "."""
  group = [found[-1]]
  for prev in reversed(found[:-1]):
    between = text[prev[1] : group[0][0]]
    if len(between) > 40 or _JOIN_RE.fullmatch(between) is None:
      break
    group.insert(0, prev)
  return ", ".join(c.strip() for _, _, c in group)


_MATH_CUE_RE = re.compile(
    r"(?:final answer is|answer is|answer\s*:|final answer\s*[-\u2013]|"
    r"\banswer\s*(?=\$|\\\(|\\\[))\s*:?\s*",
    re.IGNORECASE,
)
_SENTENCE_END_RE = re.compile(r"(?:(?<=[.!?])|(?<=\\\]))\s+(?=[A-Z*])")
_BOLD_RE = re.compile(r"\*\*([^*]{1,40})\*\*")
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?")
# inline $..$ as pandoc reads it: no space inside either dollar, the closing one not before
# a digit (so "$325 - $130 = $195" is currency, not math)
_MATH_SEG_RE = re.compile(
    r"\\\[(.+?)\\\]|\$\$(.+?)\$\$|\\\((.+?)\\\)" r"|\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)", re.DOTALL
)
_VERB_RE = re.compile(r"\b(?:is|are|was|were|be|equals|gives|has|have|had|total of)\b|=")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _math_segments(text: str) -> list[re.Match]:
  return list(_MATH_SEG_RE.finditer(text))


def _inner(m: re.Match) -> str:
  return next(g for g in m.groups() if g is not None).strip()


def _outside_math(text: str) -> str:
  return _MATH_SEG_RE.sub(" ", text)


_COMMAND_RE = re.compile(r"\\[A-Za-z]+(?:\{[A-Za-z*]*\})?")


def _has_words(text: str) -> bool:
  """Whether ``text`` has a word of 3+ letters outside math and LaTeX commands."""
  return _WORD_RE.search(_COMMAND_RE.sub(" ", _outside_math(text))) is not None


def _last_verb_end(text: str) -> int:
  """End of the last verb/``=`` of ``text`` that lies outside math segments (0: none)."""
  spans = [m.span() for m in _math_segments(text)]
  end = 0
  for m in _VERB_RE.finditer(text):
    if not any(a <= m.start() < b for a, b in spans):
      end = m.end()
  return end


def _first_value(text: str) -> str | None:
  """The first math segment or number of ``text``."""
  seg = _MATH_SEG_RE.search(text)
  num = _NUMBER_RE.search(_outside_math(text) if seg is None else text[: seg.start()])
  if num is not None:
    return num.group(0).rstrip(",")
  return _inner(seg) if seg is not None else None


def _words_answer(sentence: str) -> str | None:
  """The answer a sentence in words gives: its last ``**bold**`` part, else the first math
  segment or number after its last verb, else its last math segment or number."""
  bold = _BOLD_RE.findall(sentence)
  if bold:
    return bold[-1].strip()
  end = _last_verb_end(sentence)
  got = _first_value(sentence[end:]) if end else None
  if got is None:  # the last math segment or number outside math, whichever is later
    segs = _math_segments(sentence)
    last = [(m.start(), _inner(m)) for m in segs[-1:]]
    last += [
        (m.start(), m.group(0).rstrip(","))
        for m in _NUMBER_RE.finditer(sentence)
        if not any(a <= m.start() < b for a, b in (x.span() for x in segs))
    ][-1:]
    got = max(last)[1] if last else None
  return got


def _clean(out: str) -> str | None:
  out = out.strip().rstrip(".").strip()
  for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    while out.startswith(left) and out.endswith(right) and len(out) >= len(left) + len(right):
      out = out[len(left) : len(out) - len(right)].strip()
  return out.strip("$").strip().rstrip(".").strip() or None


def _cue_answer(rest: str) -> str | None:
  """The answer in the text after a cue: all of it when it is math, else as a sentence."""
  rest = rest.split("I hope it is correct")[0].strip().strip("*").strip(": ")
  if not _has_words(rest):
    return _clean(rest)
  return _clean(_words_answer(rest) or rest)


def _final_answer(text: str) -> str | None:
  """Rules 3 and 4: the math the text ends with, else the final sentence's answer."""
  tail = text[-TAIL_CHARS:]
  segs = _math_segments(tail)
  if segs and not tail[segs[-1].end() :].strip(" .\n"):
    return _clean(_inner(segs[-1]))
  lines = [ln for ln in tail.split("\n") if ln.strip()]
  if not lines:
    return None
  sentence = _SENTENCE_END_RE.split(lines[-1].strip())[-1]
  if not _has_words(sentence):  # not words: a bare answer
    return None
  got = _words_answer(sentence)
  return _clean(got) if got else None


def extract_math_answer(text: str) -> str | None:
  """The answer of a MATH solution or model output, else None (see the module docstring)."""
  if not isinstance(text, str):
    return None
  found = boxes(text)
  if found is None:
    return None
  if found:
    return _joined_boxes(found, text)
  cues = list(_MATH_CUE_RE.finditer(text))
  if cues:
    rest = text[cues[-1].end() :]
    lines = rest.split("\n")
    first = lines[0] if lines[0].strip() else next((ln for ln in lines if ln.strip()), "")
    if first.strip() in ("\\[", "$$"):  # a display block on its own lines
      return _final_answer(rest[:TAIL_CHARS])
    got = _cue_answer(first[:TAIL_CHARS])
    if got is not None:
      return got
  return _final_answer(text)
