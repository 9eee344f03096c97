"""ltm_d2.model_zoo: configs by name, published checkpoints fetched from a URL and hash-checked."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from ltm_d2 import model_zoo
from ltm_d2.model_zoo import CATALOG, ChecksumMismatchError

from support import REPO, build_tiny_model

TINY = "Shapes-Detection/ltm_R_18_FPN_tiny.yaml"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache (iopath's, through FVCORE_CACHE) and a catalog restored
    afterwards."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_zoo.model_zoo, "CATALOG", dict(CATALOG))
    return tmp_path / "cache"


@pytest.fixture
def served_checkpoint(tmp_path):
    """The tiny model's weights saved as a checkpoint, its file:// URL and its SHA-256."""
    model = build_tiny_model(seed=3)
    path = tmp_path / "served" / "model_final_abcdef.pth"
    path.parent.mkdir()
    torch.save({"model": model.state_dict()}, path)
    return model.state_dict(), "file://" + str(path), model_zoo.sha256_of(str(path))


def repository_config_names():
    configs = os.path.join(REPO, "configs")
    return [
        os.path.relpath(p, configs)
        for p in glob.glob(os.path.join(configs, "**", "*.yaml"), recursive=True)
    ]


def cached_files(cache):
    return sorted(
        p for p in glob.glob(str(cache / "**" / "*"), recursive=True) if os.path.isfile(p)
    )


def test_every_config_of_the_repository_is_found_by_its_name():
    names = repository_config_names()
    assert TINY in names
    for name in names:
        assert os.path.samefile(
            model_zoo.get_config_file(name), os.path.join(REPO, "configs", name)
        )


def test_an_unknown_config_name_is_refused_with_its_name():
    with pytest.raises(RuntimeError, match="COCO-Detection/no_such_config.yaml"):
        model_zoo.get_config_file("COCO-Detection/no_such_config.yaml")


def test_get_config_has_the_ltm_keys_and_keeps_its_own_weights_when_not_trained():
    cfg = model_zoo.get_config("COCO-Detection/ltm_R_50_FPN_1x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "LTM" and cfg.MODEL.LTM.MATCHING == "ltm"
    assert cfg.MODEL.WEIGHTS.startswith("detectron2://ImageNetPretrained/")


def source_tree_without_package_configs(tmp_path):
    """A copy of the repository's sources as a clone has them: no ltm_d2/model_zoo/configs yet."""
    source = tmp_path / "source"
    for folder in ("ltm_d2", "configs"):
        shutil.copytree(
            os.path.join(REPO, folder),
            source / folder,
            ignore=shutil.ignore_patterns("__pycache__", "configs") if folder == "ltm_d2" else None,
        )
    shutil.copy(os.path.join(REPO, "setup.py"), source)
    assert not os.path.lexists(source / "ltm_d2" / "model_zoo" / "configs")
    return source


def pip(*arguments):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            *arguments,
            "--no-deps",
            "--no-build-isolation",
        ],
        check=True,
    )


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """The folder where the wheel built from a fresh clone's sources is installed."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = source_tree_without_package_configs(tmp_path)
    pip("wheel", "-w", str(tmp_path / "dist"), str(source))
    wheel = glob.glob(str(tmp_path / "dist" / "*.whl"))[0]
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")  # what installing a pure-Python wheel does
    return tmp_path / "site"


def test_a_wheel_ships_every_config_where_the_model_zoo_looks(installed_wheel):
    installed = installed_wheel / "ltm_d2" / "model_zoo"
    assert (installed / "model_zoo.py").is_file()
    relative = os.path.relpath(
        model_zoo.model_zoo.CONFIG_DIR, os.path.dirname(model_zoo.model_zoo.__file__)
    )
    for name in repository_config_names():
        shipped = installed / relative / name
        assert shipped.is_file() and not shipped.is_symlink(), name
        assert shipped.read_bytes() == open(os.path.join(REPO, "configs", name), "rb").read()


@pytest.mark.slow
def test_with_a_wheel_installed_the_scripts_of_a_checkout_run_the_study_and_train(
    installed_wheel, tmp_path
):
    checkout = tmp_path / "checkout"  # a clone's scripts, harnesses and configs, not the package
    for folder in ("configs", "tools", "dev"):
        shutil.copytree(os.path.join(REPO, folder), checkout / folder)
    shutil.copy(os.path.join(REPO, "train_net.py"), checkout)
    env = {
        **os.environ,
        "PYTHONPATH": str(installed_wheel),
        "DETECTRON2_DATASETS": os.path.join(REPO, "datasets"),
    }

    def python(*arguments):
        return subprocess.run(
            [sys.executable, *map(str, arguments)],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    assert python("-c", "import ltm_d2; print(ltm_d2.__file__)").startswith(str(installed_wheel))
    dry_run = python(checkout / "tools" / "study.py", "--dry-run", "--tables", "main")
    assert dry_run.count(str(checkout / "train_net.py")) == 10
    python(
        checkout / "train_net.py",
        "--config-file",
        checkout / "configs" / TINY,
        "OUTPUT_DIR",
        tmp_path / "run",
    )
    assert (tmp_path / "run" / "model_final.pth").is_file()


@pytest.mark.slow
def test_an_editable_build_links_the_source_trees_configs_into_its_package(tmp_path):
    source = source_tree_without_package_configs(tmp_path)
    # What `pip install -e` runs first; pip itself is not run, as it would uninstall the
    # running environment's ltm_d2.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=source,
        check=True,
    )
    names = repository_config_names()
    # An editable install imports the package from the source tree itself.
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ltm_d2 import model_zoo; "
            "print(*[model_zoo.get_config_file(n) for n in sys.argv[1:]], sep='\\n')",
            *names,
        ],
        env={**os.environ, "PYTHONPATH": str(source)},
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    for name, path in zip(names, found):
        assert os.path.samefile(path, source / "configs" / name), name
        assert os.path.commonpath([path, str(source / "ltm_d2")]) == str(source / "ltm_d2"), path


def test_a_package_without_its_configs_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIG_DIR", str(tmp_path / "configs"))
    with pytest.raises(RuntimeError, match="pip install -e ."):
        model_zoo.get_config_file(TINY)


def test_a_trained_model_is_fetched_from_its_url_and_carries_the_published_weights(
    cache, served_checkpoint
):
    weights, url, sha256 = served_checkpoint
    model_zoo.register_checkpoint(TINY, url, sha256)
    model = model_zoo.get(TINY, trained=True, device="cpu")
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert [os.path.basename(p) for p in cached_files(cache)] == ["model_final_abcdef.pth"]
    assert model_zoo.get_config(TINY, trained=True).MODEL.WEIGHTS == cached_files(cache)[0]


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(cache, served_checkpoint):
    _, url, sha256 = served_checkpoint
    with open(url[len("file://") :], "r+b") as f:  # tamper with one byte of the served file
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    model_zoo.register_checkpoint(TINY, url, sha256)
    with pytest.raises(ChecksumMismatchError) as error:
        model_zoo.get(TINY, trained=True, device="cpu")
    message = str(error.value)
    got = model_zoo.sha256_of(url[len("file://") :])
    assert TINY in message and sha256 in message and got in message and str(cache) in message
    assert cached_files(cache) == []


def test_a_cached_copy_that_no_longer_matches_is_downloaded_again(cache, served_checkpoint):
    _, url, sha256 = served_checkpoint
    model_zoo.register_checkpoint(TINY, url, sha256)
    path = model_zoo.fetch_checkpoint(TINY)
    with open(path, "ab") as f:
        f.write(b"tampered")
    assert model_zoo.fetch_checkpoint(TINY) == path
    assert model_zoo.sha256_of(path) == sha256


def test_asking_for_an_unpublished_checkpoint_names_the_config(cache):
    with pytest.raises(RuntimeError, match=f"no checkpoint of {TINY} is published"):
        model_zoo.get_config(TINY, trained=True)
