"""Which files MODELS_DIR offers, and what a request or MODEL_NAME can reach: names of listed files only.

Symlinks are the operator's choice: a `.gguf` link in MODELS_DIR is listed and served even when it
points outside the folder (a big model kept elsewhere), since only the operator can put it there. A
request names a model by its file name in the listing; a path, `..`, or a link's target name reaches
nothing.
"""

from __future__ import annotations

import os

import pytest

from errors import ModelNotFound
from models.registry import ModelRegistry, ModelRegistryError


@pytest.fixture()
def folders(tmp_path):
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    elsewhere.mkdir()
    (models / "local.gguf").write_bytes(b"GGUF local")
    (elsewhere / "big-target.gguf").write_bytes(b"GGUF kept elsewhere")
    (elsewhere / "not-linked.gguf").write_bytes(b"GGUF never linked")
    os.symlink(elsewhere / "big-target.gguf", models / "linked.gguf")
    os.symlink(elsewhere / "missing.gguf", models / "dangling.gguf")
    os.symlink(elsewhere, models / "folder.gguf")
    return models, elsewhere


def test_a_symlink_out_of_models_dir_is_the_operators_choice_and_is_served(folders):
    models, elsewhere = folders
    registry = ModelRegistry(models)
    assert [m.id for m in registry.list()] == ["linked.gguf", "local.gguf"]  # no dangling link, no folder
    linked = registry.get("linked")
    assert linked.path == models / "linked.gguf" and linked.path.resolve() == elsewhere / "big-target.gguf"
    assert linked.size == len(b"GGUF kept elsewhere")
    assert ModelRegistry(models, "linked.gguf").default().id == "linked.gguf"  # MODEL_NAME may name it


@pytest.mark.parametrize("name", [
    "big-target.gguf", "big-target",  # the link's target: not a name in the listing
    "not-linked.gguf", "../elsewhere/not-linked.gguf", "../elsewhere/not-linked",
    "dangling.gguf", "folder.gguf", "folder/../local.gguf", "./local.gguf",
])
def test_a_request_or_model_name_reaches_only_names_in_the_listing(folders, name):
    models, elsewhere = folders
    with pytest.raises(ModelNotFound):
        ModelRegistry(models).get(name)
    with pytest.raises(ModelNotFound):
        ModelRegistry(models).get(str(elsewhere / "not-linked.gguf"))  # an absolute path, even of a real file
    with pytest.raises((ModelNotFound, ModelRegistryError)):
        ModelRegistry(models, name).default()


def test_registry_errors_have_a_short_reason_without_the_folder(tmp_path):
    empty = tmp_path / "secret-place" / "models"
    empty.mkdir(parents=True)
    with pytest.raises(ModelRegistryError) as info:
        ModelRegistry(empty).default()
    assert "secret-place" in str(info.value) and "secret-place" not in info.value.reason  # the log has the path
    (empty / "a.gguf").write_bytes(b"GGUF")
    (empty / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelRegistryError) as info:
        ModelRegistry(empty).default()
    assert "MODEL_NAME" in info.value.reason and "/" not in info.value.reason
