"""Model artifacts: the models ``anomrec fit`` trains on history, for ``anomrec run --warm-start``.

A warm start spares a new deployment its warm-up: a partition that has no checkpoint begins with
the fitted detectors, their calibration, the entity profiles and the recommender of the fit,
instead of from nothing. The artifacts are a processor's state (see
:meth:`~anomrec.streaming.core.Processor.state`) split into one archive per model, with a manifest.

Layout
------
``<directory>/<version>/``, where versions are ``0001``, ``0002`` and up, one per fit; loading
``<directory>`` takes the highest. A version folder holds:

``manifest.json``
    ``format`` (:data:`FORMAT`), ``version``, ``created``, ``anomrec`` and ``libraries`` (the
    versions that wrote it), ``models`` (each model's version, as alerts name it),
    ``feature_schema`` (the profile and its feature names, in order), ``settings`` (every setting
    the state depends on), ``training`` (source, events, bad records, first and last event) and
    ``files`` (each archive's size and SHA-256).
``features.npz``
    The per-entity feature state.
``detector-<name>.npz``
    One per detector: HalfSpaceTrees' trees and masses; IsolationForest's and LOF's training
    rows and seed (they are fitted again on load, never unpickled).
``ensemble.npz``
    Calibration windows, weights, the clean window, typical ranges and the refit schedule.
``recommender.npz``
    The recommender's factors, counts and similarity state, when it is on.

Each archive is written by :func:`~anomrec.streaming.checkpoint.encode_state`. A version is
written into a temporary folder and renamed into place, so a reader sees all of it or none.

Loading checks, in order, before any archive is opened: the manifest's format, each file's size
and SHA-256, and the feature schema against the configuration's. Then the processor restores
the state, which checks every other setting and the scikit-learn version. Any failure is an
:class:`~anomrec.streaming.exceptions.ArtifactError` naming the folder and what to do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from .checkpoint import app_version, decode_state, encode_state
from .config import ProcessorConfig
from .core import Processor
from .exceptions import ArtifactError, CheckpointError
from .features import build_profile

FORMAT = "anomrec-models/1"
MANIFEST = "manifest.json"

_VERSION = re.compile(r"^\d{4,}$")
_FILE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\.npz$")
# Keys of the state's JSON part that go to their own archive; everything else is the ensemble's.
_SPLIT_META = ("profile", "detectors", "recommender")


@dataclass(frozen=True, slots=True)
class ModelSet:
    """A verified version of model artifacts, ready to start processors from."""

    path: Path
    manifest: dict[str, Any]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def models(self) -> dict[str, str]:
        """Each model's version, as alerts name it."""
        return dict(self.manifest["models"])

    def processor(self, config: ProcessorConfig, *, executor: Executor | None = None) -> Processor:
        """A processor that continues from the fit (see :meth:`Processor.from_state`).

        Each gets copies: processors learn in place, and one set of models starts many of them.
        """
        meta = copy.deepcopy(self.meta)
        arrays = {name: array.copy() for name, array in self.arrays.items()}
        try:
            return Processor.from_state(config, meta, arrays, executor=executor)
        except CheckpointError as exc:
            raise ArtifactError(f"models in {self.path} cannot be used: {exc}") from exc


def warm_start_models(config: ProcessorConfig) -> ModelSet | None:
    """The verified models that ``config.warm_start`` names, or None when it names none."""
    return load_models(config.warm_start, config) if config.warm_start else None


def new_processor(
    config: ProcessorConfig, models: ModelSet | None, *, executor: Executor | None = None
) -> Processor:
    """A processor for a partition with no checkpoint: from ``models`` if given, else from nothing."""
    if models is None:
        return Processor(config, executor=executor)
    return models.processor(config, executor=executor)


def save_models(processor: Processor, directory: str | os.PathLike[str], training: Mapping[str, Any]) -> Path:
    """Write ``processor``'s models as the next version under ``directory``; return its folder.

    ``training`` describes the data (source, events, range) and goes into the manifest as it is.
    """
    meta, arrays = processor.state()
    parts: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {
        "features.npz": ({"profile": meta["profile"]}, {}),
    }
    for entry in meta["detectors"]:
        prefix = f"detectors.{entry['name']}."
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        parts[f"detector-{entry['name']}.npz"] = (entry, own)
    if meta["recommender"] is not None:
        own = {k[len("recommender.") :]: v for k, v in arrays.items() if k.startswith("recommender.")}
        parts["recommender.npz"] = (meta["recommender"], own)
    taken = {k for k in arrays if k.startswith(("detectors.", "recommender."))}
    rest = {k: v for k, v in meta.items() if k not in _SPLIT_META}
    parts["ensemble.npz"] = (rest, {k: v for k, v in arrays.items() if k not in taken})

    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
        staging.chmod(0o755)  # mkdtemp makes it private; the models are not secret
    except OSError as exc:
        raise ArtifactError(
            f"cannot write models to {str(root)!r}: {exc.strerror}; pass another --out"
        ) from None
    try:
        files = {}
        for name, state in parts.items():
            data = encode_state(state, compress=True)
            (staging / name).write_bytes(data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        version = _next_version(root)
        manifest = {
            "format": FORMAT,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "anomrec": app_version(),
            "libraries": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
            "models": processor.model_versions(),
            "feature_schema": _schema(processor.config),
            "settings": meta["settings"],
            "training": dict(training),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        final = root / version
        os.rename(staging, final)  # fails rather than overwrite, should two fits race for a number
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def load_models(path: str | os.PathLike[str], config: ProcessorConfig) -> ModelSet:
    """Verify and read the models at ``path``: a version folder, or its parent for the highest version.

    Raises
    ------
    ArtifactError
        No models there, a manifest of another format, a missing, altered or extra-large file, or
        models fitted on other features than ``config`` computes. The message names the folder,
        the file and what to do.
    """
    folder = _version_folder(Path(path))
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {folder / MANIFEST}: {exc}; fit the models again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(
            f"{folder / MANIFEST} has format {found!r}, this anomrec reads {FORMAT!r}: fit the models "
            "again with this version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{folder / MANIFEST} lists no files: fit the models again")
    payloads: dict[str, bytes] = {}
    for name, expected in files.items():
        if not isinstance(name, str) or not _FILE.match(name) or not isinstance(expected, dict):
            raise ArtifactError(f"{folder / MANIFEST} lists a bad file entry {name!r}: fit the models again")
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise ArtifactError(
                f"model file {folder / name} cannot be read ({exc.strerror}): fit the models again"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != expected.get("bytes") or digest != expected.get("sha256"):
            raise ArtifactError(
                f"model file {folder / name} does not match its manifest (SHA-256 {digest}, "
                f"{len(data):,} bytes; the manifest says {expected.get('sha256')}, "
                f"{expected.get('bytes')} bytes): it was altered or damaged after the fit, so it is "
                "refused; fit the models again or restore the folder from a copy"
            )
        payloads[name] = data
    schema, wanted = manifest.get("feature_schema"), _schema(config)
    if schema != wanted:
        raise ArtifactError(
            f"models in {folder} were fitted on {_describe(schema)}, but this configuration computes "
            f"{_describe(wanted)}: run with the fit's settings, or fit again with these"
        )
    try:
        meta, arrays = _assemble({name: decode_state(data) for name, data in payloads.items()})
    except (CheckpointError, KeyError, TypeError) as exc:
        raise ArtifactError(f"models in {folder} are incomplete ({exc}): fit the models again") from None
    return ModelSet(path=folder, manifest=manifest, meta=meta, arrays=arrays)


def _assemble(
    parts: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The processor state that :func:`save_models` split into ``parts``."""
    meta, arrays = parts["ensemble.npz"]
    meta = dict(meta)
    arrays = dict(arrays)
    meta["profile"] = parts["features.npz"][0]["profile"]
    detectors = []
    for name in meta["calibrators"]:
        entry, own = parts[f"detector-{name}.npz"]
        detectors.append(entry)
        arrays.update({f"detectors.{name}.{k}": v for k, v in own.items()})
    meta["detectors"] = detectors
    reco = parts.get("recommender.npz")
    meta["recommender"] = None if reco is None else reco[0]
    if reco is not None:
        arrays.update({f"recommender.{k}": v for k, v in reco[1].items()})
    return meta, arrays


def _schema(config: ProcessorConfig) -> dict[str, Any]:
    return {"profile": config.profile, "features": list(build_profile(config).feature_names)}


def _describe(schema: Any) -> str:
    if not isinstance(schema, dict):
        return f"an unknown feature schema ({schema!r})"
    return f"profile {schema.get('profile')!r} with features {schema.get('features')!r}"


def _versions(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and _VERSION.match(p.name)), key=lambda p: int(p.name)
    )


def _next_version(root: Path) -> str:
    existing = _versions(root)
    return f"{int(existing[-1].name) + 1 if existing else 1:04d}"


def _version_folder(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    if not path.is_dir():
        raise ArtifactError(
            f"no models at {str(path)!r}: it is not a folder; write models with `anomrec fit --out`"
        )
    versions = [p for p in _versions(path) if (p / MANIFEST).is_file()]
    if not versions:
        raise ArtifactError(
            f"no models in {str(path)!r}: expected a manifest.json there or in a version folder "
            "(0001, 0002, ...) below it; write models with `anomrec fit --out`"
        )
    return versions[-1]
