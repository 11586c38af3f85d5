"""View offsets: which gallery faces get one, and the FMR-equalising shift, on hand-computed cases."""

import numpy as np
import pytest

from facematch.search.matching import adjusted_distance, fmr_equalising_offset, view_offset, view_offsets


def test_only_custody_faces_found_by_the_cnn_get_the_offset():
    assert view_offset("custody", "cnn", 0.12) == 0.12
    assert view_offset("custody", "hog", 0.12) == 0.0
    assert view_offset("scene", "cnn", 0.12) == 0.0  # probes and scene faces are never shifted
    assert adjusted_distance(0.5, "custody", "cnn", 0.12) == pytest.approx(0.62)
    np.testing.assert_allclose(view_offsets(["hog", "cnn", None, "hog-fine", "mtcnn"], 0.1), [0, 0.1, 0, 0, 0.1])


def test_fmr_equalising_offset_by_hand():
    frontal = np.arange(0.0, 1.001, 0.01)  # 101 evenly spaced distances
    shifted = frontal - 0.2  # the same distribution, 0.2 closer
    assert fmr_equalising_offset(frontal, shifted) == pytest.approx(0.2)
    # quantile 0.5 of [0, 1, 2, 3] is 1.5 and of [0, 0, 0, 1] is 0: the shift at the median is 1.5
    assert fmr_equalising_offset([0, 1, 2, 3], [0, 0, 0, 1], quantiles=(0.5,)) == pytest.approx(1.5)
    assert fmr_equalising_offset(shifted, frontal) == 0.0  # never a bonus
    with pytest.raises(ValueError):
        fmr_equalising_offset([], [0.5])
