"""Development tools of yuzu-onnx (run from a source checkout; not part of the installed package)."""
