import glob
import os
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def model_zoo_configs():
    """
    Put the repository's configs/ inside the package, at ltm_d2/model_zoo/configs, where
    `ltm_d2.model_zoo` looks for them, and list them as package data. As Detectron2's setup.py does
    for its own model zoo, this happens at build time: a relative link where the platform allows
    one (an editable install then sees edits to configs/), a copy otherwise. A wheel holds the
    files themselves either way. Building from an sdist, which has no configs/ at the top, keeps
    the package's copy.
    """
    source = os.path.join(HERE, "configs")
    destination = os.path.join(HERE, "ltm_d2", "model_zoo", "configs")
    if os.path.isdir(source):
        if os.path.islink(destination):
            os.unlink(destination)
        elif os.path.isdir(destination):
            shutil.rmtree(destination)
        try:
            os.symlink(os.path.relpath(source, os.path.dirname(destination)), destination)
        except OSError:  # no symlinks (Windows without the privilege, some file systems)
            shutil.copytree(source, destination)
    package = os.path.dirname(destination)
    configs = [
        path
        for pattern in ("*.yaml", "*.py")  # yacs configs and LazyConfigs
        for path in glob.glob(os.path.join(destination, "**", pattern), recursive=True)
    ]
    return [os.path.relpath(path, package) for path in configs]


setup(
    name="ltm_d2",
    version="0.1.0",
    description="Learning to Match Anchors for Visual Object Detection (LTM), a Detectron2 project",
    packages=find_packages(include=["ltm_d2", "ltm_d2.*"]),
    package_data={"ltm_d2.model_zoo": model_zoo_configs()},
    python_requires=">=3.10",
    install_requires=[
        "numpy<2",
        "opencv-python<4.12",
        "fvcore",
        "iopath",
        "pycocotools",
        "matplotlib",
        "Pillow",  # image sizes from file headers (a user's CSV dataset)
    ],
    extras_require={
        "slurm": ["submitit"],  # train_net.py --slurm-*: the run submitted to a SLURM cluster
        "test": [
            "pytest",
            "hypothesis",
            "onnx",
            "onnxruntime",
            "onnxscript",  # torch.onnx.export's dynamo exporter
            "submitit",
            "shapely",  # SAHI's, which the tests install without its pins (Makefile)
            "fire",
            "requests",
            "ruff",
        ],
    },
)
