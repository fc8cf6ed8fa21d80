"""FLOPs accounting and the FLOPs-matched exchange of test-time compute for parameters (§7).

With N parameters, pretraining on D_pretrain tokens costs X = 6 N D_pretrain
and inference on D_inference tokens costs Y = 2 N D_inference. A model M
times larger costs M X + M Y with greedy decoding. The small model matches
that total when it spends K times its greedy inference tokens:

  6 N D_p + 2 N K D_i = M (6 N D_p + 2 N D_i)
  =>  K = M + 3 (M - 1) / R,   R = D_inference / D_pretrain.

K counts generations of the small model against one greedy generation of
the large one. Verifier (PRM/ORM) FLOPs are reported separately: counted
too, with a verifier as large as the policy reading each generated token
once, every small-model generation costs twice as much, so K halves
(`with_verifier`). The paper's comparison does not count them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

R_VALUES = (0.16, 0.79, 22.0)  # the paper's inference-to-pretraining token ratios


def pretrain_flops(num_params: float, tokens: float) -> float:
  """X = 6 N D."""
  return 6.0 * float(num_params) * float(tokens)


def inference_flops(num_params: float, tokens: float) -> float:
  """Y = 2 N D."""
  return 2.0 * float(num_params) * float(tokens)


def inference_multiplier(m: float, r: float) -> float:
  """K = M + 3 (M - 1) / R: the small model's allowed generations per large-model greedy one."""
  if m < 1 or r <= 0:
    raise ValueError(f"need M >= 1 and R > 0, got M={m}, R={r}")
  return float(m) + 3.0 * (float(m) - 1.0) / float(r)


def budget_within(budgets: Sequence[int], allowed: float) -> int | None:
  """The largest swept budget not above `allowed` (None if even the smallest is above)."""
  fit = [int(b) for b in budgets if b <= allowed + 1e-9]
  return max(fit) if fit else None


def exchange(
    small_params: int,
    large_params: int,
    pretrain_tokens: float,
    r_values: Sequence[float] = R_VALUES,
) -> dict:
  """Per R: M, K, and the FLOPs on both sides per large-model greedy generation budget."""
  m = large_params / small_params
  out = {}
  for r in r_values:
    d_i = r * pretrain_tokens
    k = inference_multiplier(m, r)
    small = pretrain_flops(small_params, pretrain_tokens) + inference_flops(small_params, k * d_i)
    large = pretrain_flops(large_params, pretrain_tokens) + inference_flops(large_params, d_i)
    out[r] = dict(
        M=m,
        R=r,
        K=k,
        K_with_verifier=k / 2.0,
        inference_tokens=d_i,
        small_total_flops=small,
        large_total_flops=large,
    )
  return out


def flops_matched(
    optimal_by_bin: Mapping[int, Mapping[int, float]],
    large_by_bin: Mapping[int, float],
    small_params: int,
    large_params: int,
    pretrain_tokens: float,
    r_values: Sequence[float] = R_VALUES,
) -> dict:
  """{R: {bin: comparison}}: compute-optimal small model at its allowed budget vs large greedy.

  optimal_by_bin[b][N]: the small model's compute-optimal accuracy in bin b at
  generation budget N; large_by_bin[b]: the large model's greedy pass@1 there.
  The small model gets the largest swept budget within K (conservative).
  """
  ex = exchange(small_params, large_params, pretrain_tokens, r_values)
  out = {}
  for r, e in ex.items():
    row = {}
    for b, curve in sorted(optimal_by_bin.items()):
      n = budget_within(list(curve), e["K"])
      small = curve[n] if n is not None else None
      large = large_by_bin.get(b)
      row[int(b)] = dict(
          allowed_budget=e["K"],
          budget=n,
          small=small,
          large=large,
          gain=None if small is None or large is None else small - large,
          winner=None
          if small is None or large is None
          else ("test_time" if small > large else "larger_model" if large > small else "tie"),
      )
    out[r] = row
  return out
