"""The aggregation server: MQTT ingest, validation, storage, REST API and dashboard.

Modules, in the order the data flows:

- :mod:`.ingest`: subscribe (MQTT v5, shared subscriptions, QoS 1, persistent session), validate
  with ``edgetune.contract``, count rejects, store, then acknowledge.
- :mod:`.store` / :mod:`.db`: each (device, seq) stored once; SQLite today, by URL.
- :mod:`.api` and ``static/``: the JSON API and the dashboard page.
- :mod:`.service`: :class:`~.service.Server`, all of it wired together; :mod:`.cli`: ``edgetune server``.

Importing this package (or :mod:`.cli`) loads no web framework and no MQTT client.
"""
