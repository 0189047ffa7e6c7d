"""yuzu-onnx: fast, exact in-silico saturation mutagenesis for ONNX sequence models.

Two steps, *convert then run*::

    import yuzu_onnx
    ism_model = yuzu_onnx.convert("model.onnx", seq_len=1000)
    results = yuzu_onnx.ISMSession(ism_model).run(X)   # {output: (N, A, L, ...)}
"""

__version__ = "0.1.0"

from .convert import convert, convert_model, save_model  # noqa: E402
from .errors import InputError, ModelError, SequenceError, UnsupportedError, YuzuError, YuzuWarning  # noqa: E402
from .importer import ModelSpec, load_model  # noqa: E402
from .oracle import naive_ism  # noqa: E402
from .session import ISMSession, ism  # noqa: E402

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
    "ism",
    "load_model",
    "naive_ism",
    "save_model",
]
