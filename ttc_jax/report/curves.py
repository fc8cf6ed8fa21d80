"""Accuracy curves in report form: {"N": accuracy} with N ascending, merged into a report."""

from __future__ import annotations


def curve(c: dict) -> dict:
  """{N: accuracy} -> {"N": accuracy}, sorted by N."""
  return {str(n): v for n, v in sorted(c.items(), key=lambda kv: int(kv[0]))}


def curve_sets(
    curves: dict, curves_by_level: dict, skip: tuple[str, ...] = ()
) -> tuple[dict, dict]:
  """({name: curve}, {name: {level: curve}}) in report form from {name: {N: acc}} and
  {level: {name: {N: acc}}}, leaving out the names in `skip`."""
  out = {k: curve(v) for k, v in curves.items() if k not in skip}
  by_level: dict = {}
  for lv, cs in curves_by_level.items():
    for k, v in cs.items():
      if k not in skip:
        by_level.setdefault(k, {})[lv] = curve(v)
  return out, by_level


def merge_curves(rep: dict, curves: dict, curves_by_level: dict) -> None:
  """Adds report-form curves to rep["curves"] and rep["curves_by_level"] (per level)."""
  rep["curves"].update(curves)
  for k, v in curves_by_level.items():
    rep["curves_by_level"].setdefault(k, {}).update(v)
