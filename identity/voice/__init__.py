"""Voice identity: audio intake, speech detection, speaker embeddings and verification."""
