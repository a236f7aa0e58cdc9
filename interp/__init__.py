"""interp: mechanistic interpretability of attention, fast and at long context.

Flow: `models` load -> `hooks` instrument -> `kernels` reduce q/k to statistics ->
`analyses` turn statistics into findings -> `plots` draw them -> `cli` wires flags to calls.
"""

from interp.errors import InterpError
from interp.models import ArchInfo, LoadedModel, load_model, wrap_model

__version__ = "0.1.0"

__all__ = ["InterpError", "ArchInfo", "LoadedModel", "load_model", "wrap_model", "__version__"]
