"""interp: mechanistic interpretability of attention, fast and at long context.

Flow: `models` load -> `hooks` instrument -> `kernels` reduce q/k to statistics ->
`analyses` turn statistics into findings (pure) -> `experiments` run an analysis on a model and
store its results -> `plots` draw them -> `cli` wires flags to experiments. `datasets` holds the
inputs (texts, needles, tasks).
"""

from interp.errors import InterpError
from interp.models import ArchInfo, LoadedModel, Model, load_model, wrap_model

__version__ = "0.1.0"

__all__ = ["InterpError", "ArchInfo", "LoadedModel", "Model", "load_model", "wrap_model", "__version__"]
