"""Package data of ``yuzu-onnx demo``: the trained motif model and its example sequences.

``demo_motifs.onnx`` (a small CNN that finds GATA and AP-1 sites), ``demo_sequences.fa``
(16 held-out sequences of length 200) and ``demo_motifs.tsv`` (where the motifs were
planted in them), all written by ``tools/train_demo.py``. Read them with
:func:`yuzu_onnx.demo.demo_data_file`.
"""
