import pytest

from promptcore.data import SyntheticImages, SyntheticTexts, few_shot_indices


def test_few_shot_draw_among_and_classes():
    labels = [i % 3 for i in range(30)]
    picked = few_shot_indices(labels, 2, seed=0, among=range(15), classes=[0, 2])
    assert all(i < 15 for i in picked) and sorted(labels[i] for i in picked) == [0, 0, 2, 2]
    assert few_shot_indices(labels, 20, seed=0, on_short="all") == list(range(30))
    with pytest.raises(ValueError, match="shots: K must be a positive integer, found 0"):
        few_shot_indices(labels, 0, seed=0)


def test_synthetic_sources_are_seeded_and_splits_differ():
    a, b = SyntheticImages(16, 4, seed=3), SyntheticImages(16, 4, seed=3)
    assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert not (SyntheticImages(16, 4, seed=3, split="test").images == a.images).all()
    t = SyntheticTexts(8, 2, seed=1)
    assert t.texts == SyntheticTexts(8, 2, seed=1).texts and t.class_names == ["excellent", "terrible"]
    keywords = [{"excellent", "wonderful", "superb", "delightful", "brilliant"}, {"terrible", "awful", "dreadful", "boring", "painful"}]
    for text, y in zip(t.texts, t.labels.tolist()):
        words = set(text.split())
        assert words & keywords[y] and not words & keywords[1 - y]  # the class signal, and only its own
