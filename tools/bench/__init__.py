"""Benchmark yuzu-onnx against naive ISM, and optionally against peers, on classic models.

Run from a source checkout: ``python tools/bench.py --help`` (or ``python -m tools.bench``).
Named models are built and exported by ``tools/torch_models.py`` (needs PyTorch) and cached;
``.onnx`` files are benchmarked as they are. Every measurement runs in its own child
process, so its peak RSS is its own and a crash or a timeout is a result.

Modules, in the order a run uses them:

* :mod:`.cli`: options, the check for needed packages, the main loop;
* :mod:`.models`: which models exist, how they are built and exported;
* :mod:`.benchmark`: the measurements of one model and of a whole run;
* :mod:`.workers` and :mod:`.peers`: the measurements themselves (yuzu-onnx and its
  oracle; tangermeme and the original Yuzu);
* :mod:`.isolation`: child processes, memory limits, timeouts;
* :mod:`.measurements`: timing, memory, sequences, errors against the oracle;
* :mod:`.environment`: the commit and the machine;
* :mod:`.records` and :mod:`.report`: the JSON results and their Markdown tables;
* :mod:`.profile`: where the time of a converted model goes (``--profile``).
"""
