"""The device side of edgetune, and the contracts every program shares.

This package must run on a Jetson with only ``pip install 'edgetune[edge]'``: it never imports
torch, and optional runtimes (onnxruntime providers, tensorrt, sounddevice, cv2) are imported
inside the function that needs them.
"""
