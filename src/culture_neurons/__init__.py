"""Find culture-sensitive neurons in vision-language models and test them by ablation.

The subpackages follow the workflow's DAG: `data` (prepare), `demo`, `models`, `record`,
`selection` (select), `inference` (answering, shared by record and ablate), `ablation`,
`analysis` (matrices, figures, Table 2) and `benchmark`.
"""

import sys as _sys

__version__ = "0.1.0"

# The public contract from before the layout followed the DAG: `from culture_neurons import
# selectors, answers` and `import culture_neurons.selectors` keep working. Both are light (numpy
# and the standard library only).
from culture_neurons.inference import answers  # noqa: E402
from culture_neurons.selection import selectors  # noqa: E402

_sys.modules[f"{__name__}.answers"] = answers
_sys.modules[f"{__name__}.selectors"] = selectors

__all__ = ["__version__", "answers", "selectors"]
