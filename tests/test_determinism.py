"""Files do not depend on the thread count or the batch that wrote them (docs/entropy.md, Determinism).

All four methods, bundled small models, small crops of a real photo. The entropy parameters run on the
parameter path (``diffcodec.entropy.determinism``: CPU float32, one thread, image by image); these
tests vary what the caller controls — ``torch.set_num_threads`` and the batch — and demand byte-identical
files that decode to the encoder's symbols.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

import diffcodec
from diffcodec.entropy.determinism import cpu_replica, device_parameter_path, parameter_net, portable
from diffcodec.imageio import to_tensor

MODELS = ("oscar-small", "stablecodec-small", "cadc-small", "onedc-small")


@contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def crop(left: int, top: int, size: int) -> torch.Tensor:
    from importlib import resources

    with Image.open(str(resources.files("diffcodec") / "assets" / "astronaut.png")) as image:
        return to_tensor(image.convert("RGB").crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def codecs() -> dict[str, diffcodec.Codec]:
    return {name: diffcodec.load(name) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_files_do_not_depend_on_the_thread_count(codecs: dict, name: str) -> None:
    """Every rung; OneDC at 448² (its top rung differed between 1 and 2 threads before the parameter path)."""
    codec = codecs[name]
    image = crop(100, 50, 448 if name == "onedc-small" else 192)
    for quality in range(codec.num_rungs):
        with threads(1):
            one = codec.compress(image, quality=quality).to_bytes()
        with threads(2):
            two = codec.compress(image, quality=quality).to_bytes()
        assert one == two, f"{name} rung {quality}: the file depends on the thread count"
    with threads(2):  # a 1-thread file decodes with 2 threads
        assert codec.decompress(one, output="tensor").shape[-2:] == image.shape[-2:]


def _latent_codec_io(codec: diffcodec.Codec, x: torch.Tensor) -> tuple:
    """The latent codec's inputs for a (B, 3, H, W) batch in [0, 1] (StableCodec / CADC)."""
    if codec.method == "stablecodec":
        return codec.encode_latents(x)
    return (x * 2 - 1,)


@pytest.mark.parametrize("name", ["stablecodec-small", "cadc-small"])
def test_a_batch_codes_each_image_as_alone_and_decodes_to_its_symbols(codecs: dict, name: str) -> None:
    codec = codecs[name]
    x = torch.cat([crop(0, 0, 256), crop(200, 120, 256)])
    with torch.no_grad():
        codec._prepare_for_coding()
    with torch.inference_mode():
        batch = codec.latent_codec.compress(*_latent_codec_io(codec, x))
        alone = [codec.latent_codec.compress(*_latent_codec_io(codec, x[i : i + 1])) for i in range(2)]
        y_strings, z_strings = batch["strings"]
        for i in range(2):
            assert [y_strings[i], z_strings[i]] == [s[0] for s in alone[i]["strings"]]
            decoded = codec.latent_codec.decompress([[y_strings[i]], [z_strings[i]]], batch["shape"])
            assert torch.equal(decoded["y_hat"], batch["y_hat"][i : i + 1])  # the encoder's symbols
            assert torch.equal(decoded["y_hat"], alone[i]["y_hat"])


def test_onedc_parameter_networks_are_batch_invariant(codecs: dict) -> None:
    """OneDC codes one image per call; its parameter networks give each image of a batch its own result."""
    latent_codec = codecs["onedc-small"].latent_codec
    codes = latent_codec.z_vq.indices_to_codes(torch.randint(0, 4**7, (2, 3, 4)))
    _, feature = latent_codec.hyper_dec(codes)
    batch = parameter_net(latent_codec.y_prior_fusion, feature)
    for i in range(2):
        assert torch.equal(batch[i : i + 1], parameter_net(latent_codec.y_prior_fusion, feature[i : i + 1]))


def test_oscar_indices_do_not_depend_on_the_batch(codecs: dict) -> None:
    """OSCAR writes fixed-length VQ indices: no entropy parameters; the hyper-encoder is batch-invariant."""
    codec = codecs["oscar-small"]
    x = torch.cat([crop(0, 0, 256), crop(200, 120, 256)])
    with torch.inference_mode():
        z0 = codec.backbone.encode(x * 2 - 1)  # posterior mean: no sampling noise
        for encoder in codec.hyper_encoders:
            batch = encoder.encode(z0)
            assert all(torch.equal(batch[i : i + 1], encoder.encode(z0[i : i + 1])) for i in range(2))


def test_cpu_replica_follows_weight_changes() -> None:
    module = torch.nn.Conv2d(2, 2, 1).double()  # not float32: a replica is made
    replica = cpu_replica(module)
    assert replica is not module and replica.weight.dtype == torch.float32
    assert cpu_replica(module) is replica  # cached
    with torch.no_grad():
        module.weight.add_(1.0)  # e.g. a rung switch loading other weights
    fresh = cpu_replica(module)
    assert fresh is not replica and torch.equal(fresh.weight, module.weight.float())
    assert "_diffcodec_cpu_replica" not in str(module.state_dict().keys())
    plain = torch.nn.Conv2d(2, 2, 1)
    assert cpu_replica(plain) is plain  # already CPU float32: used as it is


@pytest.mark.parametrize("name", ["stablecodec-small", "onedc-small"])
def test_the_device_parameter_path_round_trips_and_matches_the_cpu_path_here(codecs: dict, name: str) -> None:
    """``device_parameter_path`` (fast on a GPU) uses the codec's own device: on this CPU, with one thread,
    it is the same arithmetic as the portable path, so the files agree."""
    codec = codecs[name]
    image = crop(100, 50, 128)
    with threads(1):
        portable_file = codec.compress(image).to_bytes()
        with device_parameter_path():
            assert not portable()
            native_file = codec.compress(image).to_bytes()
            decoded = codec.decompress(native_file, output="tensor")
    assert portable() and native_file == portable_file
    assert decoded.shape[-2:] == image.shape[-2:]


def test_reference_hyperprior_files_do_not_depend_on_the_thread_count() -> None:
    from diffcodec.codecs.latent_hyperprior import LatentHyperprior

    torch.manual_seed(0)
    codec = LatentHyperprior().eval()
    image = crop(60, 40, 256)
    for quality in range(codec.num_rungs):
        with threads(1):
            one = codec.compress(image, quality=quality).to_bytes()
        with threads(2):
            assert codec.compress(image, quality=quality).to_bytes() == one
            assert codec.decompress(one, output="tensor").shape[-2:] == image.shape[-2:]
