"""Batched image augmentation: shapes, identities at zero strength, randomness per example."""

from __future__ import annotations

import pytest
import torch

from dltrain.data import build_augment
from dltrain.errors import ConfigError

PARAMS = {"hflip": {"p": 0.5}, "rotate": {"degrees": 15.0}, "shift": {"fraction": 0.1},
          "zoom": {"scale": 0.1}, "brightness": {"delta": 0.2}, "contrast": {"delta": 0.2}}
ALL = list(PARAMS)
SHAPE = (3, 16, 12)  # not square: rotation must not shear


def batch(n: int = 32, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


def test_empty_list_is_none():
    assert build_augment([], PARAMS, SHAPE) is None


@pytest.mark.parametrize("names", [[n] for n in ALL] + [ALL])
def test_shape_dtype_device_kept_and_input_untouched(names):
    x = batch()
    before = x.clone()
    y = build_augment(names, PARAMS, SHAPE)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.equal(x, before)
    assert y.data_ptr() != x.data_ptr()
    assert torch.isfinite(y).all()


def test_hflip_always_and_never():
    x = batch()
    assert torch.equal(build_augment(["hflip"], {"hflip": {"p": 1.0}}, SHAPE)(x), x.flip(-1))
    assert torch.equal(build_augment(["hflip"], {"hflip": {"p": 0.0}}, SHAPE)(x), x)


def test_hflip_flips_some_examples_only():
    torch.manual_seed(0)
    x = batch(64)
    y = build_augment(["hflip"], PARAMS, SHAPE)(x)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert torch.all(flipped | kept) and 10 < flipped.sum() < 54


def test_zero_strength_geometry_is_identity():
    x = batch()
    zero = {"rotate": {"degrees": 0.0}, "shift": {"fraction": 0.0}, "zoom": {"scale": 0.0}}
    y = build_augment(["rotate", "shift", "zoom"], zero, SHAPE)(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["rotate", "shift", "zoom"])
def test_geometry_changes_the_images(name):
    torch.manual_seed(0)
    x = batch()
    y = build_augment([name], PARAMS, SHAPE)(x)
    assert (y - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every example moved


def test_rotation_near_180_degrees_is_a_point_reflection():
    # Angles are drawn from [-180, 180]: among 4000 draws some land within a fraction of a
    # degree of +-180, and those examples must equal the image turned upside down.
    aug = build_augment(["rotate"], {"rotate": {"degrees": 180.0}}, (1, 9, 9))
    x = batch(4000, (1, 9, 9))
    torch.manual_seed(0)
    y = aug(x)
    err = (y - x.flip(-1).flip(-2)).abs().amax(dim=(1, 2, 3))  # (B,)
    assert err.min() < 0.05


def test_brightness_shifts_each_mean_by_at_most_delta():
    torch.manual_seed(0)
    x = batch()
    y = build_augment(["brightness"], PARAMS, SHAPE)(x)
    shift = (y - x).mean(dim=(1, 2, 3))  # (B,)
    assert shift.abs().max() <= 0.2 + 1e-6
    torch.testing.assert_close(y - x, shift[:, None, None, None].expand_as(x), atol=1e-6, rtol=0)
    assert shift.std() > 0.01  # one offset per example


def test_contrast_keeps_each_mean():
    torch.manual_seed(0)
    x = batch() + 3.0
    y = build_augment(["contrast"], PARAMS, SHAPE)(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))  # (B,): the factor of each example
    assert torch.all((ratio >= 0.8 - 1e-5) & (ratio <= 1.2 + 1e-5)) and ratio.std() > 0.01


def test_examples_get_different_draws():
    torch.manual_seed(0)
    x = batch(1).expand(8, *SHAPE)  # eight copies of one image
    y = build_augment(ALL, PARAMS, SHAPE)(x)
    flat = y.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


def test_same_seed_same_output():
    aug = build_augment(ALL, PARAMS, SHAPE)
    x = batch()
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    assert torch.equal(aug(x), a)
    assert not torch.equal(aug(x), a)  # the next call draws anew


def test_missing_params_take_the_defaults_and_repr_lists_them():
    aug = build_augment(["hflip", "rotate"], {}, SHAPE)
    assert repr(aug) == "Augment(hflip(p=0.5), rotate(degrees=15))"


@pytest.mark.parametrize("shape", [(64,), (10, 5)])
def test_non_images_are_a_config_error(shape):
    with pytest.raises(ConfigError) as info:
        build_augment(["hflip"], PARAMS, shape)
    assert str(info.value) == (f"regularization.augment needs images (channels, height, width), but this data's "
                               f"examples have shape {shape}: remove regularization.augment.")


def test_duplicate_names_are_a_config_error():
    with pytest.raises(ConfigError, match="lists hflip twice"):
        build_augment(["hflip", "rotate", "hflip"], PARAMS, SHAPE)


def test_unknown_names_and_keys_are_refused_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"^regularization.augment\[0\]=cutout is not a known value: choose one of "):
        compose(["regularization.augment=[cutout]"])
    with pytest.raises(ConfigError, match=r"^regularization.augment_params.hflip.prob is not a config key "
                                          r"\(known keys there: p\)"):
        compose(["+regularization.augment_params.hflip.prob=0.5"])


def test_unknown_names_and_keys_from_python_are_plain_errors():
    with pytest.raises(KeyError, match="cutout"):
        build_augment(["cutout"], PARAMS, SHAPE)
    # An unknown key would be ignored: refused instead.
    with pytest.raises(ValueError, match="^hflip has no key prob: use p$"):
        build_augment(["hflip"], {"hflip": {"prob": 0.5}}, SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_gpu():
    x = batch().cuda()
    torch.manual_seed(0)
    y = build_augment(ALL, PARAMS, SHAPE)(x)
    assert y.device == x.device and torch.isfinite(y).all()


# --- crop: reflection padding, then a window at a random offset per example ------------

CROP = {"crop": {"padding": 2}}


def crop_offsets(x: torch.Tensor, y: torch.Tensor, p: int) -> list[list[tuple[int, int]]]:
    """For each example, every offset ``(top, left)`` in [0, 2p]^2 whose window of the
    reflection-padded input equals the output exactly."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    found: list[list[tuple[int, int]]] = [[] for _ in range(len(x))]
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            same = (padded[:, :, top:top + h, left:left + w] == y).flatten(1).all(dim=1)  # (B,)
            for i in same.nonzero().flatten().tolist():
                found[i].append((top, left))
    return found


def test_crop_keeps_the_shape_and_leaves_the_input_alone():
    x = batch()
    before = x.clone()
    y = build_augment(["crop"], {"crop": {"padding": 4}}, SHAPE)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(x, before)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_crop_is_a_window_of_the_reflection_padded_image(p):
    torch.manual_seed(0)
    x = batch(16)  # random pixels: exactly one offset matches each example
    y = build_augment(["crop"], {"crop": {"padding": p}}, SHAPE)(x)
    found = crop_offsets(x, y, p)
    assert all(len(offsets) == 1 for offsets in found), found


def test_crop_offsets_differ_per_example_and_cover_the_range():
    p = 2
    aug = build_augment(["crop"], CROP, SHAPE)
    torch.manual_seed(0)
    x = batch(400)
    found = crop_offsets(x, aug(x), p)
    offsets = [offsets[0] for offsets in found]
    assert len(set(offsets)) == (2 * p + 1) ** 2  # every (top, left) in [0, 2p]^2, within one batch
    tops = torch.tensor([top for top, _ in offsets], dtype=torch.float)
    assert abs(tops.mean().item() - p) < 0.3  # centred: shifts of -p..p pixels


def test_crop_same_seed_same_batch():
    aug = build_augment(["crop", "hflip"], {**CROP, "hflip": {"p": 0.5}}, SHAPE)
    x = batch()
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    assert torch.equal(aug(x), a)
    assert not torch.equal(aug(x), a)


def test_crop_keeps_channels_last_and_matches_the_default_layout():
    aug = build_augment(["crop"], CROP, SHAPE)
    x = batch()
    torch.manual_seed(3)
    plain = aug(x)
    torch.manual_seed(3)
    nhwc = aug(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert torch.equal(nhwc, plain)


def test_crop_comes_before_hflip_whatever_the_list_order():
    x = batch()
    torch.manual_seed(5)
    expected = build_augment(["hflip"], PARAMS, SHAPE)(build_augment(["crop"], CROP, SHAPE)(x))
    torch.manual_seed(5)
    assert torch.equal(build_augment(["hflip", "crop"], {**PARAMS, **CROP}, SHAPE)(x), expected)


@pytest.mark.parametrize("padding", [12, 20])
def test_crop_padding_must_be_below_the_image_size(padding):
    with pytest.raises(ConfigError) as info:
        build_augment(["crop"], {"crop": {"padding": padding}}, SHAPE)  # 16 x 12 images
    message = str(info.value)
    assert message.startswith(f"regularization.augment_params.crop.padding={padding} does not fit these 16x12 images")
    assert "from 1 to 11" in message and "\n" not in message
    assert repr(build_augment(["crop"], {"crop": {"padding": 11}}, SHAPE)) == "Augment(crop(padding=11))"


def test_crop_padding_is_checked_by_the_schema(compose):
    assert compose([]).regularization.augment_params.crop.padding == 4
    with pytest.raises(ConfigError, match=r"regularization.augment_params.crop.padding=0 is out of range: it must be "
                                          r">= 1"):
        compose(["regularization.augment_params.crop.padding=0"])
