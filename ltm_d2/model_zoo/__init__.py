"""
The ltm_d2 model zoo, as `detectron2.model_zoo`: the project's configs by name, and the published
checkpoints of the catalog, fetched and checked against their SHA-256.
"""

from .model_zoo import (
    CATALOG,
    ChecksumMismatchError,
    fetch_checkpoint,
    get,
    get_checkpoint_url,
    get_config,
    get_config_file,
    register_checkpoint,
    sha256_of,
)

__all__ = [
    "CATALOG",
    "ChecksumMismatchError",
    "fetch_checkpoint",
    "get",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "register_checkpoint",
    "sha256_of",
]
