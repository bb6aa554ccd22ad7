"""edgetune: transfer learning for the edge.

One distribution, one command line, three programs and the contracts between them (each a
top-level folder of the repository, installed as a subpackage):

- ``edgetune.contract`` (folder ``contract/``): bundle manifest, tensor names, topics and
  telemetry messages. Imported by the three programs; imports none of them.
- ``edgetune.export`` (folder ``export/``): training, export to ONNX, bundles. Needs torch.
- ``edgetune.edge`` (folder ``edge/``): the device daemon. Never imports torch.
- ``edgetune.server`` (folder ``server/``): MQTT ingest, storage, API and dashboard.

This package itself (folder ``app/``) holds the command line, the demo and the shared errors.
"""

__version__ = "0.2.0"
