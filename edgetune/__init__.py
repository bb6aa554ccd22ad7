"""edgetune: transfer learning for the edge.

Three programs share this distribution:

- ``edgetune.export`` (folder ``export/``): training, export to ONNX, bundles. Needs torch.
- ``edgetune.edge`` (folder ``edge/``): the device daemon and the contracts. Never imports torch.
- ``edgetune.server`` (folder ``server/``): MQTT ingest, storage, API and dashboard.
"""

__version__ = "0.1.0"
