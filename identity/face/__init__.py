"""Face identity: detection, quality gates, encoding, templates and verification."""
