"""The aggregation server: MQTT ingest, validation, storage, REST API and dashboard."""
