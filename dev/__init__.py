"""
The project's development harnesses, kept out of the installed package as Detectron2 keeps its
own in dev/: the study (tools/study.py) and the loss fuzzing cases (bench/fuzz.py,
tests/test_loss_fuzz.py). They are imported with the repository's root on sys.path, from a
checkout only.
"""
