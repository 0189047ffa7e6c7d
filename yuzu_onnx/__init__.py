"""yuzu-onnx: fast, exact in-silico saturation mutagenesis for ONNX sequence models.

Two steps, *convert then run*::

    import yuzu_onnx
    ism_model = yuzu_onnx.convert("model.onnx", seq_len=1000)
    results = yuzu_onnx.ISMSession(ism_model).run(X)   # {output: (N, A, L, ...)}

Profile outputs can be kept *banded* (``convert(..., output_form="banded")``): only the
positions each mutation reaches; :func:`densify` expands them.
"""

from .bands import densify
from .convert import convert, convert_model, save_model
from .errors import InputError, ModelError, SequenceError, UnsupportedError, YuzuError, YuzuWarning
from .importer import ModelSpec, load_model
from .oracle import naive_ism
from .session import ISMSession, ism
from .shards import load_results
from .version import __version__ as __version__

__all__ = [
    "ISMSession",
    "InputError",
    "ModelError",
    "ModelSpec",
    "SequenceError",
    "UnsupportedError",
    "YuzuError",
    "YuzuWarning",
    "convert",
    "convert_model",
    "densify",
    "ism",
    "load_model",
    "load_results",
    "naive_ism",
    "save_model",
]
