"""The models manifest: every weights file, its sha256, and verification before load."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity.checks import ModelStamp

MANIFEST_PATH = Path(
    os.environ.get("KUZET_MODELS_MANIFEST", Path(__file__).resolve().parents[1] / "models" / "manifest.json")
)


class ModelError(Exception):
    """A weights file is missing, unpinned or does not match its pinned sha256."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One manifest row."""

    name: str
    version: str
    kind: str
    location: str
    sha256: str | None
    source_url: str
    license: str
    optional: bool = False

    def stamp(self) -> ModelStamp:
        """The stamp every result produced with this model carries."""
        return ModelStamp(name=self.name, version=self.version, weights_sha256=self.sha256 or "unpinned")


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelEntry]:
    """Read the manifest into entries keyed by name."""
    raw: dict[str, Any] = json.loads(path.read_text())
    fields = set(ModelEntry.__dataclass_fields__)
    return {m["name"]: ModelEntry(**{k: v for k, v in m.items() if k in fields}) for m in raw["models"]}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(entry: ModelEntry, models_dir: Path) -> Path:
    """Filesystem path of an entry: inside an installed package, or under the models directory."""
    scheme, _, rel = entry.location.partition(":")
    if scheme == "package":
        pkg, _, inner = rel.partition("/")
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"{entry.name}: package {pkg!r} is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / inner
    if scheme == "dir":
        return models_dir / rel
    raise ModelError(f"{entry.name}: unknown location scheme {scheme!r}")


def verified_path(
    name: str, models_dir: Path, manifest: dict[str, ModelEntry] | None = None
) -> tuple[Path, ModelEntry]:
    """Path of a weights file after checking its sha256; raises ModelError on any mismatch."""
    entries = manifest if manifest is not None else load_manifest()
    if name not in entries:
        raise ModelError(f"{name}: not in the models manifest")
    entry = entries[name]
    if not entry.sha256:
        raise ModelError(f"{name}: no sha256 pinned in the manifest; refusing to load unpinned weights")
    path = resolve(entry, models_dir)
    if not path.is_file():
        raise ModelError(f"{name}: weights file missing at {path} (see models/README.md)")
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise ModelError(f"{name}: sha256 mismatch at {path}: expected {entry.sha256}, got {actual}")
    return path, entry


def install_from(source: Path, models_dir: Path, manifest: dict[str, ModelEntry] | None = None) -> list[str]:
    """Copy `dir:` weights from `source` into `models_dir`, verifying each; returns installed names."""
    entries = manifest if manifest is not None else load_manifest()
    installed: list[str] = []
    for entry in entries.values():
        scheme, _, rel = entry.location.partition(":")
        if scheme != "dir" or not entry.sha256:
            continue
        src = source / rel
        if not src.is_file():
            continue
        if sha256_file(src) != entry.sha256:
            raise ModelError(f"{entry.name}: {src} does not match the pinned sha256; not installed")
        dst = models_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file() or sha256_file(dst) != entry.sha256:
            shutil.copyfile(src, dst)
        installed.append(entry.name)
    return installed
