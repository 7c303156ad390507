"""Recipes take the data folder as one argument (``--data.root``) and name no folder of this repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffcodec.data import ImageFolderDataModule

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(
    path
    for path in (REPO / "recipes").rglob("*.yaml")
    if "class_path: diffcodec.data.ImageFolderDataModule" in path.read_text()
)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(REPO / "recipes")))
def test_recipe_data_folders_are_inside_data_root(recipe: Path) -> None:
    config = yaml.safe_load(recipe.read_text())
    assert len(RECIPES) >= 20  # every method's recipes
    arguments = config["data"]["init_args"]
    assert "root" in arguments and arguments["root"] is None, "the data folder must be --data.root"
    for key in ("train_dir", "val_dir"):
        value = arguments.get(key)
        if value is not None:
            assert not Path(value).is_absolute() and ".." not in Path(value).parts, (key, value)
    assert "shared/data" not in recipe.read_text()


def test_data_root_joins_relative_folders(kodak_dir: Path) -> None:
    module = ImageFolderDataModule("kodak", "kodak", root=kodak_dir.parent, crops=64, num_workers=0)
    module.setup("fit")
    assert module.train_dir == str(kodak_dir) and len(module.train_set) > 0 and module.val_set is not None
    absolute = ImageFolderDataModule(str(kodak_dir), None, root="/elsewhere", crops=64, num_workers=0)
    assert absolute.train_dir == str(kodak_dir)  # a full path stays as it is


def test_missing_root_says_to_pass_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = ImageFolderDataModule("photos", "kodak", crops=64, num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"--data.root DIR"):
        module.setup("fit")
