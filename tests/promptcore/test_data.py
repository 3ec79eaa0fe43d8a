import pytest

from promptcore.data import few_shot_indices


def test_few_shot_draw_among_and_classes():
    labels = [i % 3 for i in range(30)]
    picked = few_shot_indices(labels, 2, seed=0, among=range(15), classes=[0, 2])
    assert all(i < 15 for i in picked) and sorted(labels[i] for i in picked) == [0, 0, 2, 2]
    assert few_shot_indices(labels, 20, seed=0, on_short="all") == list(range(30))
    with pytest.raises(ValueError, match="shots: K must be a positive integer, found 0"):
        few_shot_indices(labels, 0, seed=0)
