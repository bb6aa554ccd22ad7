"""The device daemon: pipelines of streaming inference, on-device fine-tuning, telemetry.

This package must run on a Jetson with only ``pip install 'edgetune[edge]'``: it never imports
torch, and optional runtimes (onnxruntime providers, tensorrt, sounddevice, cv2) are imported
inside the function that needs them. The contracts it shares with the exporter and the server
live in ``edgetune.contract``.

Layout, in data-flow order:

- :mod:`.bundle`: a verified bundle; :mod:`.runtime`: ONNX Runtime sessions (TensorRT > CUDA > CPU).
- :mod:`.pipeline`: the stages every modality provides, the heads, and the one loop that runs them.
- :mod:`.audio`: the audio modality's source, preprocessing, embedding and postprocessing.
- :mod:`.head`, :mod:`.head_select`, :mod:`.head_store`: the linear heads, their refit, their versions.
- :mod:`.enroll`, :mod:`.evaluate`, :mod:`.dataset`: fine-tuning and measuring on labelled folders.
- :mod:`.sinks`, :mod:`.telemetry`: where events and metrics go.
- :mod:`.config`, :mod:`.wiring`: the daemon built from its TOML config; :mod:`.cli`: ``edgetune edge``.
"""
