from ternarylm.data import DEFAULT_STORIES, synthetic_stories
from ternarylm.data.stories import NAMES


def test_same_seed_same_text():
    assert synthetic_stories(50, seed=3) == synthetic_stories(50, seed=3)
    assert synthetic_stories(50, seed=3) != synthetic_stories(50, seed=4)
    assert synthetic_stories(20, seed=3) == synthetic_stories(50, seed=3)[:20]


def test_default_size_and_variety():
    stories = synthetic_stories(DEFAULT_STORIES)
    assert len(stories) == DEFAULT_STORIES
    assert 2_000_000 <= sum(map(len, stories)) <= 4_000_000
    assert len(set(stories)) == len(stories)
    text = " ".join(stories[:1000])
    assert sum(name in text for name, _ in NAMES) >= 45


def test_stories_are_well_formed():
    for story in synthetic_stories(500, seed=1):
        assert story == story.strip() and "\n\n" not in story
        assert story.count('"') % 2 == 0, story  # every quote closes
        assert "{" not in story and "}" not in story  # every slot filled
        assert story.endswith((".", '!"', '."', "!"))
