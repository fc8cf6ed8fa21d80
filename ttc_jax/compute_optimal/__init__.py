"""Compute-optimal test-time scaling (Snell et al. 2024 §3, §5.3, §6.3, §7).

difficulty.py  oracle and PRM-predicted difficulty bins of held-out questions
select.py      per-bin, per-budget strategy choice with k-fold cross-validation
flops.py       pretraining/inference FLOPs and the FLOPs-matched exchange rate
tables.py      per-question accuracy tables from the run directory's artifacts
policy.py      ComputeOptimalPolicy: predict a question's bin, run the chosen strategy
"""
