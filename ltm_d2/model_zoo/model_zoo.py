"""
The project's model zoo, as `detectron2.model_zoo`: configs by name, and published checkpoints
fetched by URL and accepted only when their SHA-256 matches the catalog.
"""

import hashlib
import os
from typing import Dict, NamedTuple, Optional
from urllib.parse import urlparse

import torch
from iopath.common.file_io import get_cache_dir
from torch.hub import download_url_to_file

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.modeling import build_model

from ..checkpoint import SafeCheckpointer
from ..config import load_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class PublishedCheckpoint(NamedTuple):
    url: str
    sha256: str


# Config name (relative to configs/) -> its published checkpoint. `tools/publish_checkpoint.py`
# prints the line to add for a training run; `register_checkpoint` adds one at run time.
CATALOG: Dict[str, PublishedCheckpoint] = {}


class ChecksumMismatchError(RuntimeError):
    """A downloaded checkpoint is not the file the catalog names."""


def register_checkpoint(config_path: str, url: str, sha256: str) -> None:
    """Add (or replace) the checkpoint of `config_path` in the catalog."""
    get_config_file(config_path)
    CATALOG[config_path] = PublishedCheckpoint(url, sha256.lower())


def get_checkpoint_url(config_path: str) -> str:
    """The URL of the checkpoint published for `config_path`."""
    return _catalog_entry(config_path).url


def get_config_file(config_path: str) -> str:
    """
    The path of a config shipped with ltm_d2.

    Args:
        config_path: relative to the project's configs/, e.g. "COCO-Detection/ltm_R_50_FPN_1x.yaml"
    """
    if not os.path.isdir(CONFIG_DIR):
        raise RuntimeError(
            f"the ltm_d2 model zoo has no configs at {CONFIG_DIR}: setup.py puts the repository's "
            "configs/ there when the package is built; install it (pip install -e . in the "
            "repository) or run setup.py once"
        )
    path = os.path.join(CONFIG_DIR, config_path)
    if not os.path.isfile(path):
        raise RuntimeError(f"{config_path} is not a config of the ltm_d2 model zoo ({CONFIG_DIR})")
    return path


def get_config(config_path: str, trained: bool = False):
    """
    The config `config_path`: a yacs config (.yaml) with the MODEL.LTM keys, read with safe YAML,
    or a LazyConfig (.py), as `detectron2.model_zoo.get_config` returns either.

    Args:
        trained: if True, MODEL.WEIGHTS (train.init_checkpoint) is the published checkpoint of
            this config, downloaded (once, into iopath's cache) and checked against its SHA-256;
            otherwise the config's own weights (ImageNet weights or none) are kept.
    """
    if config_path.endswith(".py"):
        cfg = LazyConfig.load(get_config_file(config_path))
        if trained:
            cfg.train.init_checkpoint = fetch_checkpoint(config_path)
        return cfg
    cfg = load_config(get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = fetch_checkpoint(config_path)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> torch.nn.Module:
    """
    The model of `config_path` (yacs or LazyConfig), in training mode, as
    `detectron2.model_zoo.get`.

    Args:
        trained: see :func:`get_config`.
        device: overrides MODEL.DEVICE (train.device; the CPU when there is no GPU).
    """
    cfg = get_config(config_path, trained)
    if isinstance(cfg, CfgNode):
        if device is not None:
            cfg.MODEL.DEVICE = device
        model, weights = build_model(cfg), cfg.MODEL.WEIGHTS
        checkpointer = SafeCheckpointer(model, cfg=cfg)
    else:
        device = device or cfg.train.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        model, weights = instantiate(cfg.model).to(device), cfg.train.init_checkpoint
        checkpointer = SafeCheckpointer(model)
    checkpointer.load(weights)
    return model


def fetch_checkpoint(config_path: str) -> str:
    """
    The local path of the published checkpoint of `config_path`: a cached copy whose SHA-256
    matches the catalog, or else a fresh download that must match. A download that does not match
    is deleted and refused (ChecksumMismatchError).
    """
    url, expected = _catalog_entry(config_path)
    folder = os.path.join(get_cache_dir(), "ltm_d2", os.path.splitext(config_path)[0])
    path = os.path.join(folder, os.path.basename(urlparse(url).path))
    if os.path.isfile(path) and sha256_of(path) == expected:
        return path
    os.makedirs(folder, exist_ok=True)
    partial = path + ".partial"
    download_url_to_file(url, partial, progress=False)
    got = sha256_of(partial)
    if got != expected:
        os.remove(partial)
        raise ChecksumMismatchError(
            f"checkpoint of {config_path} refused: SHA-256 expected {expected}, got {got} "
            f"for {url} (downloaded to {partial}, now deleted)"
        )
    os.replace(partial, path)
    return path


def sha256_of(path: str) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _catalog_entry(config_path: str) -> PublishedCheckpoint:
    if config_path not in CATALOG:
        raise RuntimeError(
            f"no checkpoint of {config_path} is published in the ltm_d2 model zoo "
            f"(published: {sorted(CATALOG) or 'none'})"
        )
    return CATALOG[config_path]
