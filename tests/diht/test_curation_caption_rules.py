"""Specification of CAT's caption rules (DiHT, arXiv 2301.02280; rules as quoted in SemDeDup, arXiv 2303.09540).

Complexity = the most scene-graph edges (attributes + relations, a relation counting on both objects) on any object;
actions = verbs with a subject. The spaCy path is specified on `Doc`s written by hand (words, POS, Penn tags, heads,
dependency labels as spaCy's English pipelines give them), so no model is needed. The offline fallback is specified
on captions whose tags textblob's bundled tagger gets right, with the counts worked out by hand in each test.
"""

import logging

import pytest
import spacy
from spacy.tokens import Doc
from spacy.vocab import Vocab

from curation import (
    CaptionSignals,
    PatternCaptionParser,
    SpacyCaptionParser,
    analyse_doc,
    caption_rules,
    load_caption_parser,
)


def doc(annotated: list[tuple[str, str, str, int, str]]) -> Doc:
    """A parsed Doc from (word, POS, Penn tag, head index, dependency label) per token."""
    words, pos, tags, heads, deps = zip(*annotated)
    return Doc(Vocab(), words=list(words), pos=list(pos), tags=list(tags), heads=list(heads), deps=list(deps))


A_DOG = [("a", "DET", "DT", 1, "det"), ("dog", "NOUN", "NN", 1, "ROOT")]
A_BROWN_DOG = [("a", "DET", "DT", 2, "det"), ("brown", "ADJ", "JJ", 2, "amod"), ("dog", "NOUN", "NN", 2, "ROOT")]


# ---- spaCy path: hand-built dependency trees -------------------------------------------------------------------
def test_spacy_bare_object_has_complexity_zero_and_no_action():
    assert analyse_doc(doc(A_DOG)) == CaptionSignals(complexity=0, num_actions=0)


def test_spacy_adjective_is_one_attribute():
    assert analyse_doc(doc(A_BROWN_DOG)).complexity == 1


def test_spacy_preposition_relation_counts_on_both_objects():
    # a brown dog on the green grass: dog = brown + (dog, on, grass) = 2; grass = green + the relation = 2
    tokens = [("a", "DET", "DT", 2, "det"), ("brown", "ADJ", "JJ", 2, "amod"), ("dog", "NOUN", "NN", 2, "ROOT"),
              ("on", "ADP", "IN", 2, "prep"), ("the", "DET", "DT", 6, "det"), ("green", "ADJ", "JJ", 6, "amod"),
              ("grass", "NOUN", "NN", 3, "pobj")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=2, num_actions=0)


def test_spacy_verb_with_nominal_subject_is_an_action():
    tokens = [("a", "DET", "DT", 1, "det"), ("dog", "NOUN", "NN", 2, "nsubj"), ("runs", "VERB", "VBZ", 2, "ROOT")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=0, num_actions=1)


def test_spacy_verb_relations_and_numbers_add_up_on_the_subject():
    # two young men ride bikes near a tall red building ("near" attached to the verb):
    # men = two + young + (men, ride, bikes) + (men, ride near, building) = 4; building = tall + red + 1 = 3
    tokens = [("two", "NUM", "CD", 2, "nummod"), ("young", "ADJ", "JJ", 2, "amod"), ("men", "NOUN", "NNS", 3, "nsubj"),
              ("ride", "VERB", "VBP", 3, "ROOT"), ("bikes", "NOUN", "NNS", 3, "dobj"), ("near", "ADP", "IN", 3, "prep"),
              ("a", "DET", "DT", 9, "det"), ("tall", "ADJ", "JJ", 9, "amod"), ("red", "ADJ", "JJ", 9, "amod"),
              ("building", "NOUN", "NN", 5, "pobj")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=4, num_actions=1)


def test_spacy_present_participle_modifying_a_noun_is_an_action_of_that_noun():
    # a woman holding an umbrella walks down the street: holding (acl, VBG) and walks (nsubj) are actions;
    # woman = (woman, holding, umbrella) + (woman, walks down, street) = 2
    tokens = [("a", "DET", "DT", 1, "det"), ("woman", "NOUN", "NN", 5, "nsubj"), ("holding", "VERB", "VBG", 1, "acl"),
              ("an", "DET", "DT", 4, "det"), ("umbrella", "NOUN", "NN", 2, "dobj"), ("walks", "VERB", "VBZ", 5, "ROOT"),
              ("down", "ADP", "IN", 5, "prep"), ("the", "DET", "DT", 8, "det"), ("street", "NOUN", "NN", 6, "pobj")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=2, num_actions=2)


def test_spacy_past_participle_modifier_is_not_an_action():
    # a photo taken in Paris: "taken" has no subject and is not a present participle
    tokens = [("a", "DET", "DT", 1, "det"), ("photo", "NOUN", "NN", 1, "ROOT"), ("taken", "VERB", "VBN", 1, "acl"),
              ("in", "ADP", "IN", 2, "prep"), ("Paris", "PROPN", "NNP", 3, "pobj")]
    assert analyse_doc(doc(tokens)).num_actions == 0


def test_spacy_predicate_adjective_is_an_attribute_and_copula_is_no_action():
    tokens = [("the", "DET", "DT", 1, "det"), ("car", "NOUN", "NN", 2, "nsubj"), ("is", "AUX", "VBZ", 2, "ROOT"),
              ("red", "ADJ", "JJ", 2, "acomp")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=1, num_actions=0)


def test_spacy_passive_verb_with_subject_is_an_action_and_relation():
    # a car is parked on the street: car = (car, parked on, street) = 1
    tokens = [("a", "DET", "DT", 1, "det"), ("car", "NOUN", "NN", 3, "nsubjpass"), ("is", "AUX", "VBZ", 3, "auxpass"),
              ("parked", "VERB", "VBN", 3, "ROOT"), ("on", "ADP", "IN", 3, "prep"), ("the", "DET", "DT", 6, "det"),
              ("street", "NOUN", "NN", 4, "pobj")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=1, num_actions=1)


def test_spacy_pronoun_subject_makes_an_action_but_no_relation():
    tokens = [("he", "PRON", "PRP", 1, "nsubj"), ("rides", "VERB", "VBZ", 1, "ROOT"), ("a", "DET", "DT", 3, "det"),
              ("bike", "NOUN", "NN", 1, "dobj")]
    assert analyse_doc(doc(tokens)) == CaptionSignals(complexity=0, num_actions=1)


HAND_PARSES = {"a brown dog": A_BROWN_DOG, "a dog": A_DOG}


@spacy.Language.component("hand_parser_for_tests")
def hand_parser(d: Doc) -> Doc:
    """A stand-in for a trained tagger+parser: copies the hand annotation of a known caption onto the Doc."""
    parsed = doc(HAND_PARSES[d.text])
    for token, reference in zip(d, parsed):
        token.pos_, token.tag_, token.dep_ = reference.pos_, reference.tag_, reference.dep_
        token.head = d[reference.head.i]
    return d


def test_spacy_parser_runs_the_rules_on_a_pipeline_output():
    nlp = spacy.blank("en")
    nlp.add_pipe("hand_parser_for_tests")
    assert SpacyCaptionParser(nlp)(["a brown dog", "a dog"]) == [CaptionSignals(1, 0), CaptionSignals(0, 0)]


def test_a_loaded_spacy_pipeline_is_used_as_given():
    nlp = spacy.blank("en")
    assert isinstance(load_caption_parser(nlp), SpacyCaptionParser)


# ---- choosing a parser -------------------------------------------------------------------------------------------
def test_smallest_installed_english_pipeline_is_preferred(monkeypatch):
    monkeypatch.setattr(spacy.util, "get_installed_models",
                        lambda: ["en_core_web_lg", "de_core_news_sm", "en_core_web_sm"])
    assert caption_rules.installed_spacy_pipeline() == "en_core_web_sm"


def test_without_a_spacy_pipeline_the_fallback_is_chosen_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(spacy.util, "get_installed_models", lambda: [])
    monkeypatch.setattr(caption_rules, "_warned_fallback", False)
    with caplog.at_level(logging.WARNING, logger="curation.caption_rules"):
        parsers = [load_caption_parser(), load_caption_parser()]
    assert all(isinstance(p, PatternCaptionParser) for p in parsers)
    assert len([r for r in caplog.records if "textblob" in r.getMessage()]) == 1


def test_requiring_spacy_without_a_pipeline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(spacy.util, "get_installed_models", lambda: [])
    with pytest.raises(ValueError, match="en_core_web"):
        load_caption_parser("spacy")


# ---- offline fallback: textblob's bundled Pattern tagger and chunker --------------------------------------------
@pytest.fixture(scope="module")
def fallback():
    return PatternCaptionParser()


def test_fallback_bare_object_has_complexity_zero(fallback):
    assert fallback(["a dog"]) == [CaptionSignals(complexity=0, num_actions=0)]


def test_fallback_adjective_is_one_attribute(fallback):
    assert fallback(["a brown dog"])[0].complexity == 1


def test_fallback_prepositional_relation_counts_on_both_objects(fallback):
    # dog = brown + (dog, on, grass); grass = green + the relation
    assert fallback(["a brown dog on the green grass"]) == [CaptionSignals(complexity=2, num_actions=0)]


def test_fallback_transitive_verb_is_an_action_and_a_relation(fallback):
    # a girl throws a red ball: girl = (girl, throws, ball) = 1; ball = red + 1 = 2
    assert fallback(["a girl throws a red ball"]) == [CaptionSignals(complexity=2, num_actions=1)]


def test_fallback_present_participle_after_a_noun_is_an_action(fallback):
    # a young man riding a red bike: man = young + (man, riding, bike) = 2; bike = red + 1 = 2
    assert fallback(["a young man riding a red bike"]) == [CaptionSignals(complexity=2, num_actions=1)]


def test_fallback_predicate_adjective_is_an_attribute_and_copula_is_no_action(fallback):
    assert fallback(["the car is red"]) == [CaptionSignals(complexity=1, num_actions=0)]


def test_fallback_counts_actions_over_all_sentences(fallback):
    assert fallback(["A dog sleeps. A cat runs."])[0].num_actions == 2


def test_fallback_noun_phrase_caption_has_no_action(fallback):
    assert fallback(["Stock photo: red car for sale"])[0].num_actions == 0
