"""yuzu-onnx: fast, exact in-silico saturation mutagenesis for ONNX sequence models."""

__version__ = "0.1.0"
