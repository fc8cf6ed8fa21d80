"""Answer selection: choosing one answer from many candidates, and its accuracy by budget.

  aggregate    answers grouped by the task's equivalence; majority and weighted votes;
               accuracy of a selection rule over disjoint groups of samples by budget
  best_of_n    a solution's score from its step scores; majority, best-of-N and
               best-of-N weighted among N solutions; their curves per verifier
  chains       majority and hierarchical ORM selection over revision chains

Pure Python and NumPy over extracted answers and verifier scores: the layer below
search, prm and revision, which all select answers this way.
"""

from ttc_jax.selection import aggregate, best_of_n, chains

__all__ = ["aggregate", "best_of_n", "chains"]
