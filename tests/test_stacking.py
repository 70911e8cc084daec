"""benchmarks/stacking.py's content features: hand-computed values, and the bundled MovieLens-100K genres."""

import numpy as np
import pandas as pd
import pytest

from scripts import benchmark_script


def load_script():
    return benchmark_script("stacking")


def test_content_features_match_hand_computed_values():
    stacking = load_script()
    genre = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # 3 items, 2 genres
    year = np.array([1990.0, 2000.0, 1970.0])
    rows = pd.DataFrame({"item_id": [1, 2], "history": [[0, 2], []]})
    features = stacking.content_features(genre, year, rows)
    # row 0: profile (0.5, 0.5), item (1, 1): cosine 1; year (2000 − 1990)/10 = 1; |2000 − 1980| / 10 = 2
    # row 1: no history: cosine 0, distance 0; year (1970 − 1990)/10 = −2
    np.testing.assert_allclose(features, [[1.0, 1.0, 2.0], [0.0, -2.0, 0.0]], rtol=0, atol=1e-12)


def test_item_content_reads_the_bundled_genres_and_years_by_raw_id():
    stacking = load_script()

    class Items:  # the two fields item_content reads
        name = "ml-100k"
        items = pd.DataFrame({"item_id": [0, 1], "item_raw": ["2", "1"]})

    genre, year = stacking.item_content(Items)
    assert year.tolist() == [1995.0, 1995.0]  # GoldenEye, Toy Story
    assert genre.shape[0] == 2 and genre[0].sum() == 3 and genre[1].sum() == 3  # Action Adventure Thriller; Animation Children's Comedy
    assert genre[0] @ genre[1] == 0  # no genre in common

    Items.name = "ml-1m"
    with pytest.raises(SystemExit, match="MovieLens-100K only"):
        stacking.item_content(Items)
