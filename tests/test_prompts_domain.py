"""Prompt wording comes from the dataset's domain; the built-in datasets keep the authors' prompts byte for byte."""

from __future__ import annotations

import pytest
import yaml

from llara.llm import workflow as llmwf
from llara.llm.prompts import load_templates, past_participle, resolve_templates, write_dataset_templates

# LLaRA's released prompt files prompt/{artist,movie,game}.txt (github.com/ljy0ustc/LLaRA), one template a
# line, verbatim (trailing spaces included).
RELEASED = {
    "lastfm": (
        "This user has listened to [HistoryHere] in the previous. Please predict the next music artist this user will "
        "listen to. The artist name candidates are [CansHere]. Choose only one artist from the candidates. The answer is \n"
        "This user has listened to [HistoryHere] in the previous. Given the following 10 music artist names, [CansHere], "
        "recommend one artist for this user to listen to next. The artist name you recommend is \n"
        "The listening history of this user is [HistoryHere]. Recommend the next music artist for this user to listen to "
        "from the following artist name set, [CansHere]. The recommendation should contain one artist's name only. "
        "The recommendation is "),
    "movielens": (
        "This user has watched [HistoryHere] in the previous. Please predict the next movie this user will watch. Choose "
        "the answer from the following 10 movie titles: [CansHere]. Answer: \n"
        "This user has watched [HistoryHere] in the previous. Given the following 10 movie titles: [CansHere], recommend "
        "one movie for this user to watch next. The movie title you recommend is: \n"
        "The visit history of this user is: [HistoryHere]. Recommend a next movie for this user to watch from the "
        "following movie title set: [CansHere]. The recommendation should contain one movie title only. Recommendation:"),
    "steam": (
        "This user has played [HistoryHere] in the previous. Please predict the next game this user will play. The game "
        "title candidates are [CansHere]. Choose only one game from the candidates. The answer is \n"
        "This user has played [HistoryHere] in the previous. Given the following 10 game titles, [CansHere], recommend "
        "one game for this user to play next. The game title you recommend is \n"
        "The visit history of this user is [HistoryHere]. Recommend a next game for this user to play from the following "
        "game title set, [CansHere]. The recommendation should contain one game title only. The recommendation is "),
}


def _from_released(text: str) -> list[str]:
    """The documented deviations of templates.yaml and nothing else: format placeholders for the authors'
    [HistoryHere] / [CansHere], {n_candidates} for the hard-coded "10" (the scripts draw 20 candidates), and no
    trailing space (the answer is tokenised with its leading space)."""
    return [line.replace("[HistoryHere]", "{history}").replace("[CansHere]", "{candidates}")
            .replace("following 10 ", "following {n_candidates} ").rstrip(" ") for line in text.split("\n")]


AUTHORS = {d: _from_released(t) for d, t in RELEASED.items()}


@pytest.mark.parametrize("dataset", sorted(AUTHORS))
def test_builtin_prompts_are_the_authors(dataset, tmp_path):
    assert load_templates(dataset) == AUTHORS[dataset]
    # what the pipeline hands to tuning and zero-shot evaluation: the same strings, byte for byte
    out = tmp_path / "prompts.yaml"
    assert write_dataset_templates(dataset, out) == AUTHORS[dataset]
    assert load_templates(dataset, out) == AUTHORS[dataset]
    assert [t.encode() for t in load_templates(dataset, out)] == [t.encode() for t in AUTHORS[dataset]]
    # naming the built-in domain in the config changes nothing
    domain = {"lastfm": "artist", "movielens": "movie", "steam": "game"}[dataset]
    assert load_templates(dataset, domain=domain) == AUTHORS[dataset]


def test_generic_templates_with_the_game_words_are_the_game_prompts():
    assert load_templates("mygames", domain={"noun": "game", "verb": "play"}) == AUTHORS["steam"]


def test_own_domain_wording(tmp_path):
    label, ts = resolve_templates("mybooks", domain={"noun": "book", "verb": "read"})
    assert label == "book"
    assert ts[0].startswith("This user has read {history} in the previous. Please predict the next book this user will read.")
    assert "recommend one book for this user to read next" in ts[1]
    assert ts[0].format(history="A, B", candidates="C, D", n_candidates=2).endswith(
        "The book title candidates are C, D. Choose only one book from the candidates. The answer is")
    ts = load_templates("pods", domain={"noun": "podcast", "verb": "listen to", "past": "heard"})
    assert ts[0].startswith("This user has heard {history}") and "will listen to." in ts[0]
    assert load_templates("mymovies", domain="movie") == AUTHORS["movielens"]
    out = tmp_path / "p.yaml"
    write_dataset_templates("mybooks", out, domain={"noun": "book", "verb": "read"})
    assert yaml.safe_load(out.read_text())["datasets"] == {"mybooks": "book"}
    assert load_templates("mybooks", out)[1].endswith("The book title you recommend is")


def test_domain_errors():
    with pytest.raises(ValueError, match=r"no templates for dataset 'mybooks'.*set config datasets\.mybooks\.domain"):
        load_templates("mybooks")
    with pytest.raises(ValueError, match=r"domain 'poem'.*domains: \['artist', 'game', 'movie'\]"):
        load_templates("mybooks", domain="poem")
    with pytest.raises(ValueError, match=r"config datasets\.mybooks\.domain\.verb: expected a word"):
        load_templates("mybooks", domain={"noun": "book"})
    with pytest.raises(ValueError, match=r"domain\.noun: expected a word .* found 'bo\{ok'"):
        load_templates("mybooks", domain={"noun": "bo{ok", "verb": "read"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['plural'\]"):
        load_templates("mybooks", domain={"noun": "book", "verb": "read", "plural": "books"})


def test_past_participle():
    assert [past_participle(v) for v in ("watch", "play", "listen to", "read", "like", "try", "buy", "stop")] == [
        "watched", "played", "listened to", "read", "liked", "tried", "bought", "stopped"]


def test_workflow_uses_the_dataset_prompts():
    config = {"datasets": {"lastfm": {"source": "llara"}, "mybooks": {"source": "interactions", "domain": {"noun": "book", "verb": "read"}}},
              "llm": {"name": "tiny", "templates": None}, "seed": 0,
              "tune": {"deepspeed_config": "config/deepspeed/zero2.json", "overrides": {}, "variants": {}}}
    assert llmwf.tune_inputs(config, "mybooks", "sasrec")["templates"] == "results/mybooks/prompts.yaml"
    assert llmwf.prompt_domain(config, "mybooks") == {"noun": "book", "verb": "read"}
    assert llmwf.prompt_domain(config, "lastfm") is None
    with pytest.raises(ValueError, match="datasets.nope is missing"):
        llmwf.prompt_domain(config, "nope")
