"""The docs say what the code does: the zoo table, convert's help, the API reference page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffcodec import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_zoo_page_table_is_what_the_command_prints(tmp_path: Path) -> None:
    """docs/zoo.md's table is `diffcodec zoo` on a machine with an empty hub cache (a fresh install)."""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "diffcodec.cli", "zoo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    page = (DOCS / "zoo.md").read_text()
    table = re.search(r"```text\n(NAME .*?)```", page, re.DOTALL)
    assert table is not None
    assert table.group(1).rstrip() == result.stdout.rstrip()
    assert "NotImplementedError" not in page and "MissingWeightsError" in page


def test_convert_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    from diffcodec.zoo.convert import available

    for argv in (["convert", "--help"], *(["convert", method, "--help"] for method in available())):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        for markup in ("``", ":class:", ":func:", ":data:", "====="):
            assert markup not in out, (argv, markup)
        if len(argv) == 3:  # a method's description: whole sentences, each paragraph ends with a full stop
            description = out.split("\n\npositional arguments")[0].split("\n\n")[1:]
            assert description and all(p.rstrip().endswith(".") for p in description), (argv, description)


def test_api_reference_is_in_the_site() -> None:
    config = yaml.load((DOCS.parent / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert {"API reference": "api.md"} in config["nav"]
    assert any("mkdocstrings" in plugin for plugin in config["plugins"] if isinstance(plugin, dict))
    page = (DOCS / "api.md").read_text()
    targets = ("diffcodec.zoo.loader.load", "diffcodec.codecs.base.Codec", "diffcodec.bitstream.Bitstream")
    for target in targets:
        assert f"::: {target}\n" in page
