"""The Kuzet service: API, WebRTC ingest, evidence store, database, workstation and CLI."""
