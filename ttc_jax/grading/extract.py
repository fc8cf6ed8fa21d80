"""MATH answers out of model text: ``\\boxed{}`` contents, answer cues, final math.

``extract_math_answer(text)`` tries, in order:

1. boxes: the content of the last top-level ``\\boxed{...}`` / ``\\fbox{...}`` /
   ``\\boxed N``; boxes just before it separated only by commas, "and"/"or",
   ``$`` or ``\\quad`` join it as one list (``\\boxed{1}, \\boxed{2}`` -> ``1, 2``).
   An unbalanced last box (a truncated generation) gives None (never replaced
   by a guess from the rest of the text);
2. the last answer cue ("final answer is", "answer is", "Answer:", "Answer" before
   math): the rest of its line (or the next non-empty line), "I hope it is correct"
   cut, and when that rest is a sentence ("The largest $n$ is 34.") the part after
   its last "is"/"are"/"equals"/"=", else its last math segment;
3. the last math segment (``\\[..\\]``, ``$$..$$``, ``\\(..\\)``, ``$..$``) of the
   final sentence: within the last ``TAIL_CHARS`` characters and followed by no
   more than a short sentence.

Pure string processing with regular expressions that run in linear time, no sympy.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1000     # longer answers are not normalised (compared as strings)
TAIL_CHARS = 2000           # how far from the end a final math segment is looked for

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BOX_SPACE_RE = re.compile(r" +([^$\s]+)")
_SPACES_RE = re.compile(r" *")
_JOIN_RE = re.compile(r"(?:[\s,;$.]|\\\(|\\\)|\\\[|\\\]|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}"
                      r"|\band\b|\bor\b|(?<![A-Za-z])[A-Za-z](?:_\d)?\s*=)*")


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
      found.append((m.start(), end, text[j + 1:end - 1]))
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
    between = text[prev[1]:group[0][0]]
    if len(between) > 40 or _JOIN_RE.fullmatch(between) is None:
      break
    group.insert(0, prev)
  return ", ".join(c.strip() for _, _, c in group)


_MATH_CUE_RE = re.compile(r"(?:final answer is|answer is|answer\s*:|\banswer\s*(?=\$|\\\(|\\\[))"
                          r"\s*:?\s*", re.IGNORECASE)
_MATH_SEG_RE = re.compile(r"\\\[(.+?)\\\]|\$\$(.+?)\$\$|\\\((.+?)\\\)|\$([^$]+)\$", re.DOTALL)
_VERB_RE = re.compile(r"\b(?:is|are|equals|be|was|gives)\b|=")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _math_segments(text: str) -> list[re.Match]:
  return list(_MATH_SEG_RE.finditer(text))


def _outside_math(text: str) -> str:
  return _MATH_SEG_RE.sub(" ", text)


def _sentence_answer(rest: str) -> str | None:
  """The answer in the text after a cue: itself when it is math, else the part
  after the sentence's last verb/``=`` outside math, else its last math segment."""
  rest = rest.split("I hope it is correct")[0].strip().strip("*").strip(": ")
  out = rest
  if _WORD_RE.search(_outside_math(rest)) is not None:
    segs = _math_segments(rest)
    end = _last_verb_end(rest)
    after = rest[end:] if end else ""
    if after.strip(" .$") and (not segs or _WORD_RE.search(_outside_math(after)) is None):
      out = after
    elif segs:
      out = next(g for g in segs[-1].groups() if g is not None)
  out = out.strip().rstrip(".").strip()
  for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    while out.startswith(left) and out.endswith(right) and len(out) >= len(left) + len(right):
      out = out[len(left):len(out) - len(right)].strip()
  out = out.strip("$").strip().rstrip(".").strip()
  return out or None


def _last_verb_end(rest: str) -> int:
  """End of the last verb/``=`` of ``rest`` that lies outside math segments."""
  spans = [m.span() for m in _math_segments(rest)]
  end = 0
  for m in _VERB_RE.finditer(rest):
    if not any(a <= m.start() < b for a, b in spans):
      end = m.end()
  return end


def _final_math(text: str) -> str | None:
  """The last math segment near the end of ``text`` when only a short sentence follows."""
  tail = text[-TAIL_CHARS:]
  segs = _math_segments(tail)
  if not segs:
    return None
  m = segs[-1]
  after = tail[m.end():]
  if len(after.strip()) > 80 or "\n\n" in after.strip():
    return None
  inner = next(g for g in m.groups() if g is not None).strip()
  return inner or None


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
    rest = text[cues[-1].end():]
    lines = rest.split("\n")
    first = lines[0] if lines[0].strip() else next((ln for ln in lines if ln.strip()), "")
    if first.strip() in ("\\[", "$$"):  # a display block on its own lines
      return _final_math(rest[:TAIL_CHARS]) or None
    got = _sentence_answer(first[:TAIL_CHARS])
    if got is not None:
      return got
  return _final_math(text)
