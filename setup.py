from setuptools import find_packages, setup

setup(
    name="ltm_d2",
    version="0.1.0",
    description="Learning to Match Anchors for Visual Object Detection (LTM), a Detectron2 project",
    packages=find_packages(include=["ltm_d2", "ltm_d2.*"]),
    # The configs, through the symlink ltm_d2/model_zoo/configs -> ../../configs, so that
    # ltm_d2.model_zoo finds them in a non-editable install too.
    package_data={"ltm_d2.model_zoo": ["configs/*.yaml", "configs/*/*.yaml"]},
    python_requires=">=3.8",
    install_requires=[
        "numpy<2",
        "opencv-python<4.12",
        "fvcore",
        "iopath",
        "pycocotools",
        "matplotlib",
        "Pillow",  # image sizes from file headers (a user's CSV dataset)
    ],
    extras_require={"test": ["pytest", "hypothesis", "onnx", "onnxruntime"]},
)
