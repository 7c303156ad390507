"""The model card (``README.md``) written by ``Codec.save_pretrained`` and ``push_to_hub``.

It states what a user of the weights must know: the method and its paper, the base model the weights
depend on (hub id, revision, licence — its frozen weights are not in the repository), the licence of
the weights themselves, the rate ladder, and how to load them online and offline.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData

from diffcodec.zoo.hub import is_repo_id

if TYPE_CHECKING:
    from diffcodec.codecs.base import Codec

_LICENCE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def _licence_fields(licence: str | None) -> dict[str, Any]:
    """Hub metadata for a licence: a hub licence id as is, anything else as ``other`` + its name."""
    if not licence:
        return {}
    if _LICENCE_ID.match(licence):
        return {"license": licence}
    return {"license": "other", "license_name": re.sub(r"[^a-z0-9]+", "-", licence.lower()).strip("-")}


def build_model_card(codec: Codec, *, repo_id: str | None = None, licence: str | None = None) -> ModelCard:
    """The card for ``codec``. ``licence`` (a hub licence id or a name) overrides ``codec.licence``;
    ``repo_id`` fills the usage snippet (push_to_hub passes it through ``model_card_kwargs``)."""
    from diffcodec.version import __version__

    base = codec.base_model_ref()
    licence = licence or type(codec).licence
    data = ModelCardData(
        library_name="diffcodec",
        pipeline_tag="image-to-image",
        tags=sorted({"diffcodec", "image-compression", "one-step-diffusion", codec.method}),
        base_model=base.repo_id if base is not None and is_repo_id(base.repo_id) else None,
        **_licence_fields(licence),
    )
    paper = type(codec).paper or "not stated"
    if type(codec).paper_url:
        paper = f"[{paper}]({type(codec).paper_url})"
    if base is None:
        base_line = "none (every weight is in `model.safetensors`)"
    else:
        base_line = (
            f"`{base.repo_id}` at revision `{base.revision or 'main'}`, "
            f"licence: {base.licence or 'see its model card'}."
            " Its frozen weights are **not** in this repository; diffcodec loads them from the base model,"
            " whose licence applies to any use of this codec."
        )
    no_licence = "not stated" + (" (the base model's licence applies)" if base is not None else "")
    source = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/NAME"
    rows = "\n".join(f"| {k} | {rate:g} |" for k, rate in enumerate(codec.rates))
    body = f"""
# {codec.model_id}

A **{codec.method}** image codec for [diffcodec](https://pypi.org/project/diffcodec/) {__version__}:
the image is coded into a real bitstream and decoded with one step of a diffusion model.

- Method: `{codec.method}` — paper: {paper}
- Base model: {base_line}
- Licence of these weights: {licence or no_licence}

## Rate ladder

`quality=k` selects rung k; `bpp=` picks the nearest rung. Rates are nominal bits per pixel; the rate of
a file is always `8 · bytes / (H · W)` of the original image, every byte counted.

| quality | nominal bpp |
|---|---|
{rows}

## Usage

```python
import diffcodec

codec = diffcodec.load("{source}", quality=0)
stream = codec.compress("photo.png")
stream.to_file("photo.dcb")
image = codec.decompress(stream)
```

Command line: `diffcodec compress photo.png -m {source} -q 0`, then
`diffcodec decompress photo.dcb -m {source}`.

Offline: on a machine with internet run `hf download {repo_id or "ORG/NAME"} --local-dir DIR`, copy
`DIR`, then `diffcodec.load("/path/to/DIR")`. The base model is fetched the same way (or overridden
with a local path).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
