"""An external evidence signer for tests: the protocol of `media_server.keys.CommandSigner`.

    python tests/support/signer.py KEY.pem public-key   -> base64 raw public key
    python tests/support/signer.py KEY.pem sign < data  -> base64 signature of stdin

It stands for a KMS/HSM client: the service node is given this command, never the key file.
`--other-key OTHER.pem` signs with another key than the one it publishes (a misbehaving signer);
`--fail` exits 1 when asked to sign (a signer that is down).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _load(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("key", type=Path)
    parser.add_argument("--other-key", type=Path)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("verb", choices=["public-key", "sign"])
    args = parser.parse_args()
    key = _load(args.key)
    if args.verb == "public-key":
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        print(base64.b64encode(raw).decode())
        return 0
    if args.fail:
        print("signer unavailable", file=sys.stderr)
        return 1
    signer = _load(args.other_key) if args.other_key else key
    print(base64.b64encode(signer.sign(sys.stdin.buffer.read())).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
