"""
The project's development harnesses, kept out of the installed package as Detectron2 keeps its
own in dev/: the study (tools/study.py), the loss fuzzing cases (bench/fuzz.py,
tests/test_loss_fuzz.py), the GPU check's runner (tools/gpu_check.py) and what their reports
share. They are imported with the repository's root on sys.path, from a checkout only.
"""
