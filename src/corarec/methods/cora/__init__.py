"""CoRA (Collaborative LoRA): generator → per-sample low-rank increments → frozen LLM.

- :mod:`generator`: CF embeddings (user, item) → ``A_b [d, r]``
- :mod:`injection`: ``y = W x + (alpha/r) · P(A_bᵀ x)`` on the chosen linear maps (forward hooks)
- :mod:`merge`: ``W + ΔW_b`` written into a plain copy of the LLM for one pair
- :mod:`model`: :class:`CoRAConfig` and :class:`CoRA`, the method itself
"""

from corarec.methods.cora.generator import CollaborativeWeightsGenerator, GeneratorConfig
from corarec.methods.cora.injection import CollaborativeInjector
from corarec.methods.cora.merge import merge, merged_state_dict
from corarec.methods.cora.model import CoRA, CoRAConfig

__all__ = [
    "CoRA", "CoRAConfig", "CollaborativeInjector", "CollaborativeWeightsGenerator", "GeneratorConfig",
    "merge", "merged_state_dict",
]
