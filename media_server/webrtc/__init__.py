"""WebRTC ingest: WHIP sessions on aiortc, their capture, and the hand-off to the session pipeline."""
