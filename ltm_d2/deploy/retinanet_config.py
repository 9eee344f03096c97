"""
The plain Detectron2 RetinaNet view of an anchor-based LTM model.

An LTM model differs from a RetinaNet only in training, and its checkpoint is a RetinaNet
checkpoint. A config of it becomes one that a plain Detectron2 (``get_cfg()`` and
``merge_from_file(..., allow_unsafe=False)``, without ltm_d2 imported) accepts and whose
DefaultPredictor gives the same detections: META_ARCHITECTURE "RetinaNet", every Detectron2 key
kept (backbone, anchors, box-regression weights, score threshold, top-k, NMS, input sizes, pixel
mean and std), the project's own keys (MODEL.LTM, INPUT.TILING, ...) left out.
"""

from typing import List, Optional

from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import ANCHOR_GENERATOR_REGISTRY, BACKBONE_REGISTRY

PLAIN_META_ARCHITECTURES = ("LTM", "RetinaNet")

LTMAF_REASON = (
    "MODEL.META_ARCHITECTURE 'LTMAF' (LTM-AF) has no plain RetinaNet equivalent: it predicts the "
    "distances from one point per location to the box sides, decoded by a linear box coder "
    "(Box2BoxTransformLinear), where Detectron2's RetinaNet decodes anchor deltas "
    "(Box2BoxTransform) of MODEL.ANCHOR_GENERATOR's anchors. Export the model with "
    "tools/export_model.py instead"
)


class NoPlainRetinaNetError(ValueError):
    """A config whose model a plain Detectron2 RetinaNet cannot reproduce."""


def _project_registration(registry, name: str) -> Optional[str]:
    """The module outside Detectron2 that registered `name` in `registry`, or None."""
    if name not in registry:
        return None
    module = registry.get(name).__module__
    return None if module.startswith("detectron2.") else module


def _shared_keys(cfg: CfgNode, reference: CfgNode) -> CfgNode:
    """The keys of `cfg` that `reference` has too, at every depth, with `cfg`'s values."""
    shared = CfgNode()
    for key, value in cfg.items():
        if key not in reference:
            continue
        shared[key] = _shared_keys(value, reference[key]) if isinstance(value, CfgNode) else value
    return shared


def plain_retinanet_config(cfg: CfgNode) -> CfgNode:
    """
    Detectron2's default config with the Detectron2 keys of `cfg` (an ltm_d2 config of an LTM,
    any MODEL.LTM.MATCHING, or of a RetinaNet) and META_ARCHITECTURE "RetinaNet".

    Raises:
        NoPlainRetinaNetError: for LTM-AF and other meta-architectures, and when
            MODEL.BACKBONE.NAME or MODEL.ANCHOR_GENERATOR.NAME is registered by a module outside
            Detectron2 (ltm_d2's own builders), which a plain Detectron2 process does not know.
    """
    architecture = cfg.MODEL.META_ARCHITECTURE
    if architecture == "LTMAF":
        raise NoPlainRetinaNetError(LTMAF_REASON)
    if architecture not in PLAIN_META_ARCHITECTURES:
        raise NoPlainRetinaNetError(
            f"MODEL.META_ARCHITECTURE {architecture!r}: only "
            f"{' and '.join(PLAIN_META_ARCHITECTURES)} "
            "configs have a plain RetinaNet view"
        )
    for key, registry, name in (
        ("MODEL.BACKBONE.NAME", BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME),
        ("MODEL.ANCHOR_GENERATOR.NAME", ANCHOR_GENERATOR_REGISTRY, cfg.MODEL.ANCHOR_GENERATOR.NAME),
    ):
        module = _project_registration(registry, name)
        if module is not None:
            raise NoPlainRetinaNetError(
                f"{key} {name!r} is registered by {module}, which a plain Detectron2 process does "
                "not import: no plain RetinaNet config can build this model"
            )
    plain = get_cfg()
    plain.merge_from_other_cfg(_shared_keys(cfg, plain))
    plain.MODEL.META_ARCHITECTURE = "RetinaNet"
    return plain


def class_names(cfg: CfgNode) -> List[str]:
    """
    The names of the model's classes by index: DATASETS.CLASS_NAMES (a user's dataset), else the
    `thing_classes` of its first training dataset (the bundled dataset); empty when neither is
    known.
    """
    if cfg.DATASETS.CLASS_NAMES:
        return list(cfg.DATASETS.CLASS_NAMES)
    if not cfg.DATASETS.TRAIN:
        return []
    return list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []))


def plain_retinanet_yaml(cfg: CfgNode, source: str) -> str:
    """
    The YAML text of :func:`plain_retinanet_config`, under a comment naming `source` (the config
    it was made from) and the class names, which a plain config has no key for, with the line of
    plain Detectron2 that gives them to the metadata of DATASETS.TRAIN[0], where SAHI's Detectron2
    adapter reads them.
    """
    plain = plain_retinanet_config(cfg)
    header = [
        f"# Plain Detectron2 RetinaNet view of {source}, written by ltm_d2 (docs/deploy.md).",
        "# Loads with detectron2.config.get_cfg() and merge_from_file(..., allow_unsafe=False).",
    ]
    names = class_names(cfg)
    if names:
        header.append(f"# Classes (by index): {', '.join(names)}")
        if cfg.DATASETS.TRAIN:
            header.append("# Named in a plain Detectron2 process (for SAHI, Visualizer) by:")
            dataset = cfg.DATASETS.TRAIN[0]
            header.append(f"#   MetadataCatalog.get({dataset!r}).set(thing_classes={names!r})")
    return "\n".join(header) + "\n" + plain.dump()
