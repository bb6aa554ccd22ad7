"""The workstation side: data, training, transfer learning, export to ONNX, bundles. Needs torch."""
