"""The report's pictures: what each figure shows, that each is saved as a real PNG, and how model
inputs are turned back into pixels to show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from dltrain.data.preprocessing.images import Images, InkCounts
from dltrain.report.plots import DPI
from dltrain.report.report_plots import (
    MAX_ANNOTATED_CLASSES,
    confusion_figure,
    display_images,
    image_grid_figure,
    plot_confusion_matrix,
    plot_image_grid,
    plot_regression,
    plot_roc_pr,
    regression_figure,
    roc_pr_figure,
    tick_names,
)


def panels(fig: Figure) -> list:
    """The figure's panels, without its colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def assert_png(path, fig_size: tuple[float, float] | None = None) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        if fig_size is not None:
            assert img.size == (round(fig_size[0] * DPI), round(fig_size[1] * DPI))


def confusion(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, (k, k)) + np.diag(rng.integers(10, 30, k))


def test_two_classes_counts_and_shares_by_true_class():
    matrix = [[30, 10], [5, 15]]
    fig = confusion_figure(matrix, ["negative", "positive"])
    counts, shares = panels(fig)
    assert counts.get_title() == "counts" and shares.get_title().startswith("normalised by true class")
    for ax in (counts, shares):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["negative", "positive"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["negative", "positive"]
        assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    np.testing.assert_array_equal(counts.get_images()[0].get_array(), matrix)
    np.testing.assert_allclose(shares.get_images()[0].get_array(), [[0.75, 0.25], [0.25, 0.75]])
    assert [t.get_text() for t in counts.texts] == ["30", "10", "5", "15"]
    assert [t.get_text() for t in shares.texts] == ["0.75", "0.25", "0.25", "0.75"]
    assert "60 examples, 2 classes" in fig.get_suptitle()


def test_fifty_classes_keep_their_names_and_drop_the_cell_numbers():
    names = [f"species_{i:02d}_of_the_forest" for i in range(50)]
    counts, shares = panels(confusion_figure(confusion(50), names))
    shown = [t.get_text() for t in counts.get_yticklabels()]
    assert len(shown) == 50 and len(set(shown)) == 50  # shortened, still told apart
    assert all(len(name) <= 14 for name in shown)
    assert not counts.texts and not shares.texts  # 2500 numbers would be unreadable
    assert counts.get_xticklabels()[0].get_rotation() == 90
    assert counts.get_xticklabels()[0].get_fontsize() < 8


def test_numbers_in_cells_up_to_the_readable_limit():
    k = MAX_ANNOTATED_CLASSES
    matrix = confusion(k)
    counts, shares = panels(confusion_figure(matrix, [str(i) for i in range(k)]))
    assert 0 < np.count_nonzero(matrix == 0) < k * k
    assert len(counts.texts) == len(shares.texts) == np.count_nonzero(matrix)  # empty cells stay blank
    assert all(len(t.get_text()) <= 3 for t in shares.texts)  # shares in narrow cells: ".37"


def test_a_class_never_seen_gets_a_row_of_zeros():
    counts, shares = panels(confusion_figure([[2, 0], [0, 0]], ["a", "b"]))
    np.testing.assert_array_equal(shares.get_images()[0].get_array(), [[1, 0], [0, 0]])
    assert [t.get_text() for t in counts.texts] == ["2"] and [t.get_text() for t in shares.texts] == ["1.00"]


def test_tick_names_shorten_by_the_middle_and_number_names_alike():
    assert tick_names(["cat", "dog"]) == ["cat", "dog"]
    assert tick_names(["a_very_long_class_name"]) == ["a_very…ss_name"]
    alike = tick_names(["class_1_long_name", "class_2_long_name"])
    assert alike[0].startswith("0:") and alike[1].startswith("1:") and len(set(alike)) == 2


def test_a_matrix_that_does_not_match_its_names_is_refused():
    with pytest.raises(ValueError, match="not \\(3, 3\\)"):
        confusion_figure([[1, 2], [3, 4]], ["a", "b", "c"])


def test_roc_and_precision_recall_with_their_areas_and_baselines():
    fig = roc_pr_figure([0, 0.2, 1], [0, 0.8, 1], 0.8, [1, 0.5, 0], [0.4, 0.9, 1], 0.75, positive="fraud")
    roc, pr = panels(fig)
    assert roc.get_title() == "ROC curve: AUC = 0.800" and pr.get_title() == "precision-recall: AP = 0.750"
    assert legend_texts(roc) == ["ROC (AUC = 0.800)", "chance (AUC = 0.5)"]
    # the precision where every example is called positive: the share of positives
    assert legend_texts(pr) == ["precision-recall (AP = 0.750)", "chance (positive rate 0.40)"]
    chance = next(ln for ln in roc.get_lines() if ln.get_label().startswith("chance"))
    assert list(chance.get_xdata()) == [0, 1] and list(chance.get_ydata()) == [0, 1]
    assert (roc.get_xlabel(), pr.get_xlabel(), pr.get_ylabel()) == ("false positive rate", "recall", "precision")
    assert fig.get_suptitle() == "positive class: fraud"
    given = panels(roc_pr_figure([0, 1], [0, 1], 0.5, [1, 0], [0.5, 1], 0.5, positive="x", positive_rate=0.3))[1]
    assert legend_texts(given)[1] == "chance (positive rate 0.30)"


def test_regression_scatter_on_the_diagonal_and_residuals_around_zero():
    truth = np.array([1.0, 2.0, 3.0, np.nan])
    prediction = np.array([1.5, 1.0, 3.0, 2.0])
    fig = regression_figure(truth, prediction, target="price")
    scatter, residuals = panels(fig)
    np.testing.assert_allclose(scatter.collections[0].get_offsets(), [[1, 1.5], [2, 1], [3, 3]])
    np.testing.assert_allclose(residuals.collections[0].get_offsets(), [[1.5, 0.5], [1, -1], [3, 0]])
    diagonal = next(ln for ln in scatter.get_lines() if ln.get_label() == "y = x (exact)")
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata()) == [1.0, 3.0]
    assert (scatter.get_xlabel(), scatter.get_ylabel()) == ("true price", "predicted price")
    assert residuals.get_ylabel() == "residual (predicted - true)" and "zero residual" in legend_texts(residuals)
    assert "3 examples (1 non-finite left out)" in fig.get_suptitle()


def test_grid_of_gray_images_with_captions_and_wrong_ones_in_red():
    images = torch.rand(10, 1, 8, 8)
    captions = [f"true {i}\npred {i % 3}" for i in range(10)]
    fig = image_grid_figure(images, captions, "worst", wrong=[i % 3 != i for i in range(10)])
    (ax,) = fig.axes  # one mosaic, not one axes per image
    assert [t.get_text() for t in ax.texts] == captions
    assert [to_rgba(t.get_color()) == to_rgba("red") for t in ax.texts] == [i % 3 != i for i in range(10)]
    mosaic = ax.get_images()[0]
    assert mosaic.get_cmap().name == "gray" and mosaic.get_clim() == (0, 1)
    pixels = np.asarray(mosaic.get_array())
    assert pixels.ndim == 2 and pixels.shape[1] > 8 * 8  # 8 images a row, white between them
    assert any(np.allclose(pixels[:8, c:c + 8], images[0, 0]) for c in range(3))  # the first image, top left
    assert fig.get_suptitle() == "worst"


def test_grid_of_colour_images_and_of_other_channel_counts():
    rgb = torch.rand(3, 3, 4, 4)
    pixels = np.asarray(image_grid_figure(rgb, ["a", "b", "c"], "rgb").axes[0].get_images()[0].get_array())
    assert pixels.shape[2] == 3
    assert any(np.allclose(pixels[:4, c:c + 4], rgb[0].permute(1, 2, 0)) for c in range(3))
    two = torch.rand(2, 2, 4, 4)
    gray = np.asarray(image_grid_figure(two, ["a", "b"], "two").axes[0].get_images()[0].get_array())
    assert gray.ndim == 2 and any(np.allclose(gray[:4, c:c + 4], two[0, 0]) for c in range(3))  # the first channel


def test_a_grid_needs_one_caption_per_image():
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        image_grid_figure(torch.rand(2, 1, 4, 4), ["a"], "t")


def test_every_picture_is_saved_as_a_png(tmp_path):
    fig_size = confusion_figure(confusion(10), list("abcdefghij")).get_size_inches()
    assert_png(plot_confusion_matrix(confusion(10), list("abcdefghij"), tmp_path / "cm.png"), tuple(fig_size))
    assert_png(plot_roc_pr([0, 1], [0, 1], 0.5, [1, 0], [0.5, 1], 0.5, tmp_path / "roc.png", positive="1"),
               (9.6, 4.6))
    assert_png(plot_regression([1, 2, 3], [1, 2, 2.5], tmp_path / "reg.png", target="y"), (9.6, 4.4))
    grid = tmp_path / "grid.png"
    plot_image_grid(torch.rand(32, 1, 8, 8), [str(i) for i in range(32)], grid, "samples")
    with Image.open(grid) as img:
        assert img.format == "PNG" and img.width > img.height  # eight images a row, four rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "grid.png", "reg.png", "roc.png"]


def test_display_undoes_the_fitted_image_normalisation_exactly():
    raw = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    prep = Images.fit_images(raw)

    class Data:  # what display_images reads of DataSplits
        preprocessing = prep

    np.testing.assert_allclose(display_images(prep.apply(raw), Data()), raw / 255, atol=1e-6)


def test_display_of_grayscale_repeated_to_three_channels_is_one_channel():
    from dltrain.models.registry import InputNormalization

    raw = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    imagenet = InputNormalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)
    prep = Images.fit_images(raw).for_model(imagenet)

    class Data:
        preprocessing = prep

    x = prep.apply(raw)
    assert x.shape[1] == 3
    shown = display_images(x, Data())
    assert shown.shape == (4, 1, 5, 5)
    np.testing.assert_allclose(shown, raw / 255, atol=1e-6)


def test_display_of_ink_counts_is_the_share_of_the_largest_count():
    counts = np.random.default_rng(0).integers(0, 17, (6, 64))
    prep = InkCounts.fit(counts, pixel_max=16, image_size=(8, 8))

    class Data:
        preprocessing = prep

    np.testing.assert_allclose(display_images(prep.apply(counts), Data()), counts.reshape(6, 1, 8, 8) / 16,
                               atol=1e-5)


def test_display_without_a_record_scales_each_image_to_its_own_range_and_clips():
    x = torch.stack([torch.linspace(-3, 5, 16).reshape(1, 4, 4), torch.full((1, 4, 4), 7.0)])
    shown = display_images(x, None)
    assert shown[0].min() == 0 and shown[0].max() == 1
    np.testing.assert_allclose(shown[0], (x[0] + 3) / 8)
    assert torch.equal(shown[1], torch.zeros(1, 4, 4))  # a constant image
    assert display_images(torch.full((1, 1, 2, 2), 3.0) * torch.tensor([1.0, -1.0]).reshape(1, 1, 1, 2),
                          None).tolist() == [[[[1.0, 0.0], [1.0, 0.0]]]]
