"""`evaluation.sample_texts` ends a generation at every id of the tokenizer's `eos_ids` (a
checkpoint's generation_config.json may list several), not only at EOS."""

import jax

from toy_models import ScriptedPolicy
from ttc_jax import evaluation
from ttc_jax.tokenizers import CharTokenizer


class TwoEosTokenizer(CharTokenizer):
  """The character tokenizer with "=" also ending generations (as a second EOS id)."""

  @property
  def eos_ids(self):
    return (self.EOS, self.encode("=")[0])


def test_sampling_stops_at_a_second_eos_id():
  base, two = CharTokenizer(), TwoEosTokenizer()
  policy = ScriptedPolicy(base, "1+2=3")
  kw = dict(num_samples=1, max_new_tokens=12, temperature=1.0)
  _, one_eos = evaluation.sample_texts(policy, base, [""], jax.random.key(0), **kw)
  _, both = evaluation.sample_texts(policy, two, [""], jax.random.key(0), **kw)
  assert one_eos["generated_tokens"] == 6  # "1+2=3" then EOS
  assert both["generated_tokens"] == 4  # "1+2=" ends at the second EOS id
