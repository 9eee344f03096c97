"""Checkpoint files (.pkl, .pth) are read without running code; a malicious one is refused."""

import functools
import http.server
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from ltm_d2.checkpoint import SafeCheckpointer, UnsafeCheckpointError

from support import REPO, TINY_CONFIG, build_tiny_model


class RunsCode:
    """Unpickling this object calls `function(*args)`: here, something that creates `marker`."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def gadgets(marker):
    """Ways a pickle can run code, each of which creates the file `marker`."""
    return {
        "os.system": RunsCode(os.system, (f"touch {marker}",)),
        "builtins.exec": RunsCode(exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.call": RunsCode(subprocess.call, (["touch", str(marker)],)),
    }


GADGETS = ["os.system", "builtins.exec", "subprocess.call"]


def malicious_pkl(path, gadget):
    """A Detectron2 model-zoo .pkl whose weights hide the gadget."""
    with open(path, "wb") as f:
        pickle.dump({"model": {"weight": gadget}, "__author__": "attacker"}, f)


def malicious_pth(path, gadget):
    torch.save({"model": {"weight": gadget}}, path)


@pytest.mark.parametrize("name", GADGETS)
def test_the_crafted_pickles_do_run_code_when_read_with_plain_pickle(tmp_path, name):
    marker = tmp_path / "marker"
    malicious_pkl(tmp_path / "evil.pkl", gadgets(marker)[name])
    with open(tmp_path / "evil.pkl", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_the_crafted_pth_does_run_code_when_read_with_weights_only_false(tmp_path):
    marker = tmp_path / "marker"
    malicious_pth(tmp_path / "evil.pth", gadgets(marker)["os.system"])
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


# How each kind of file is written, and the refusal expected for it.
FORMATS = {
    "pkl": (
        malicious_pkl,
        r"evil\.pkl: refused to load: the file refers to "
        r"'(posix\.system|builtins\.exec|subprocess\.call)'",
    ),
    "pth": (malicious_pth, r"evil\.pth: refused to load: .*GLOBAL \S*(system|exec|call) "),
}


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("name", GADGETS)
def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, name, suffix):
    marker, path = tmp_path / "marker", tmp_path / f"evil.{suffix}"
    write, refusal = FORMATS[suffix]
    write(path, gadgets(marker)[name])
    with pytest.raises(UnsafeCheckpointError, match=refusal):
        SafeCheckpointer(build_tiny_model()).load(str(path))
    assert not marker.exists()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A web server on localhost serving tmp_path/served; downloads are cached in tmp_path/cache."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "served").mkdir()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_malicious_pkl_given_as_a_url_is_refused_after_download(tmp_path, http_server):
    marker = tmp_path / "marker"
    malicious_pkl(tmp_path / "served" / "evil.pkl", gadgets(marker)["os.system"])
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"evil\.pkl: refused to load: the file refers to 'posix\.system'",
    ):
        SafeCheckpointer(build_tiny_model()).load(f"{http_server}/evil.pkl")
    assert not marker.exists()


def test_code_hidden_in_a_numpy_object_array_is_refused(tmp_path):
    marker = tmp_path / "marker"
    array = np.array([gadgets(marker)["os.system"]], dtype=object)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"weight": array}, "__author__": "attacker"}, f)
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        SafeCheckpointer(build_tiny_model()).load(str(tmp_path / "evil.pkl"))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_detectron2_model_zoo_pkl_of_numpy_arrays_loads(tmp_path, protocol):
    trained = build_tiny_model(seed=1)
    weights = {k: v.numpy() for k, v in trained.state_dict().items()}
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)
    model = build_tiny_model(seed=2)
    SafeCheckpointer(model).load(str(tmp_path / "model.pkl"))
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), "--config-file", TINY_CONFIG, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_train_net_eval_only_refuses_a_malicious_pkl(tmp_path):
    marker = tmp_path / "marker"
    malicious_pkl(tmp_path / "evil.pkl", gadgets(marker)["os.system"])
    result = run(
        "train_net.py",
        "--eval-only",
        "MODEL.WEIGHTS",
        str(tmp_path / "evil.pkl"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    assert result.returncode != 0
    assert "evil.pkl: refused to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_draw_detections_refuses_a_malicious_pth(tmp_path):
    marker = tmp_path / "marker"
    malicious_pth(tmp_path / "evil.pth", gadgets(marker)["os.system"])
    result = run(
        "tools/draw_detections.py",
        "--weights",
        str(tmp_path / "evil.pth"),
        "--output",
        str(tmp_path / "pictures"),
    )
    assert result.returncode != 0
    assert "evil.pth: refused to load" in result.stderr
    assert not marker.exists() and not (tmp_path / "pictures").exists()
