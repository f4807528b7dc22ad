"""Caption rules of CAT filtering: caption complexity and number of actions.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280, Sec. 3.1) keeps a pair only if, among other rules, "the caption
has a high enough complexity" and "the caption contains an action" (the rules as quoted in SemDeDup, arXiv
2303.09540). The paper parses captions into scene graphs; its parser and thresholds were not released, so the
definitions below are ours, chosen to follow the paper's words (see `/work/shared/PAPERS.md` 1.3):

* **Objects** are nouns (`NOUN`, `PROPN`).
* **Complexity** is the largest number of scene-graph edges attached to any object. An edge is an *attribute* of the
  object (adjective, number, compound noun, or a predicate adjective "the car is red") or a *relation* between two
  objects (through a preposition, "dog on the grass", or through a verb, "man rides a bike"); a relation counts on
  both of its objects. "a dog" has complexity 0, "a brown dog" 1, "a brown dog on the grass" 2. DiHT keeps
  complexity >= 1 ("C1").
* **Actions** are verbs with a subject: a verb (not an auxiliary) with a nominal subject ("a dog *runs*"), or a
  present participle modifying a noun, whose subject is that noun ("a woman *holding* an umbrella"). Intransitive
  verbs make an action but no relation. DiHT keeps captions with at least one action.

Two interchangeable parsers compute these signals:

* `SpacyCaptionParser`: any installed spaCy pipeline with a tagger and a dependency parser (e.g. `en_core_web_sm`);
  the rules above read the dependency tree (`analyse_doc`).
* `PatternCaptionParser`: the offline fallback, textblob's bundled Brill-style tagger and chunker (the Pattern
  lexicon ships inside the `textblob` wheel; no NLTK corpus is needed). It has no dependency tree, so the same rules
  are read off the chunk sequence (`analyse_chunks`): NP heads are objects, modifiers inside an NP are attributes,
  "NP (VP) PP NP" and "NP VP NP" are relations, a VP right after an NP is an action. It is an approximation.

`load_caption_parser()` picks spaCy when an English pipeline is installed and otherwise falls back, with a one-time
warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

logger = logging.getLogger(__name__)

OBJECT_POS = {"NOUN", "PROPN"}
ATTRIBUTE_DEPS = {"amod", "nummod", "compound"}  # modifiers that describe the object itself
PREDICATE_ATTRIBUTE_DEPS = {"acomp"}  # "the car is red": red is an attribute of the subject of the copula
SUBJECT_DEPS = {"nsubj", "nsubjpass"}
OBJECT_DEPS = {"dobj", "obj", "dative", "attr", "oprd"}
PREPOSITION_DEPS = {"prep", "agent"}
PREPOSITION_OBJECT_DEPS = {"pobj"}


@dataclass(frozen=True)
class CaptionSignals:
    """What the caption rules read from one caption.

    Attributes:
        complexity: the most scene-graph edges (attributes + relations) attached to any object.
        num_actions: the number of verbs with a subject.
    """

    complexity: int
    num_actions: int


class CaptionParser(Protocol):
    """Anything that turns a list of captions into one `CaptionSignals` per caption."""

    name: str

    def __call__(self, captions: Sequence[str]) -> list[CaptionSignals]: ...


# --------------------------------------------------------------------------------------------------------------
# spaCy: rules on the dependency tree
# --------------------------------------------------------------------------------------------------------------
def _nouns(tokens) -> list:
    return [t for t in tokens if t.pos_ in OBJECT_POS]


def _verb_objects(verb) -> list:
    """Objects reached from a verb: direct objects and objects of its prepositions."""
    found = _nouns(c for c in verb.children if c.dep_ in OBJECT_DEPS)
    for prep in verb.children:
        if prep.dep_ in PREPOSITION_DEPS:
            found += _nouns(c for c in prep.children if c.dep_ in PREPOSITION_OBJECT_DEPS)
    return found


def analyse_doc(doc: Doc) -> CaptionSignals:
    """Caption complexity and number of actions of one dependency-parsed caption (DiHT's CAT caption rules).

    Reads only `pos_`, `tag_`, `dep_` and the tree, so it works on the output of any spaCy English pipeline and on
    `Doc` objects built by hand. Definitions: see the module docstring.

    Args:
        doc: a `spacy.tokens.Doc` with part-of-speech tags and a dependency parse (ClearNLP labels, as spaCy's
            English pipelines produce).

    Returns:
        The caption's `CaptionSignals`.
    """
    edges: dict[int, int] = {token.i: 0 for token in doc if token.pos_ in OBJECT_POS}
    num_actions = 0
    for token in doc:
        if token.pos_ in OBJECT_POS:
            edges[token.i] += sum(1 for c in token.children if c.dep_ in ATTRIBUTE_DEPS)
            if token.dep_ in SUBJECT_DEPS:  # "the car is red"
                edges[token.i] += sum(1 for c in token.head.children if c.dep_ in PREDICATE_ATTRIBUTE_DEPS)
            for prep in token.children:  # "dog on the grass": relation dog -- grass
                if prep.dep_ in PREPOSITION_DEPS:
                    for other in _nouns(c for c in prep.children if c.dep_ in PREPOSITION_OBJECT_DEPS):
                        edges[token.i] += 1
                        edges[other.i] += 1
        if token.pos_ in ("VERB", "AUX"):
            subjects = [c for c in token.children if c.dep_ in SUBJECT_DEPS]
            participle_of = token.dep_ == "acl" and token.tag_ == "VBG" and token.head.pos_ in OBJECT_POS
            if token.pos_ == "VERB" and (subjects or participle_of):
                num_actions += 1
            if participle_of:
                subjects = [token.head]
            for subject in _nouns(subjects):  # "man rides a bike", "dog sits on the grass"
                for other in _verb_objects(token):
                    edges[subject.i] += 1
                    edges[other.i] += 1
    return CaptionSignals(complexity=max(edges.values(), default=0), num_actions=num_actions)


class SpacyCaptionParser:
    """CAT caption rules on an installed spaCy pipeline.

    Args:
        nlp: a loaded `spacy.Language` with a tagger/morphologizer and a parser, or the name of an installed pipeline
            (e.g. `"en_core_web_sm"`); its `ner` and `lemmatizer` are disabled (the rules do not read them).
        batch_size: captions per `nlp.pipe` batch.
    """

    name = "spacy"

    def __init__(self, nlp: Language | str, batch_size: int = 256):
        if isinstance(nlp, str):
            import spacy

            nlp = spacy.load(nlp, exclude=["ner", "lemmatizer", "textcat", "senter"])
        self.nlp, self.batch_size = nlp, batch_size
        self.name = f"spacy:{nlp.meta.get('lang', '?')}_{nlp.meta.get('name', '?')}"

    def __call__(self, captions: Sequence[str]) -> list[CaptionSignals]:
        return [analyse_doc(doc) for doc in self.nlp.pipe(captions, batch_size=self.batch_size)]


# --------------------------------------------------------------------------------------------------------------
# textblob / Pattern: the same rules on the chunk sequence
# --------------------------------------------------------------------------------------------------------------
_BE = {"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m"}
_NP_ATTRIBUTE_TAGS = ("JJ", "CD", "NN", "VBN", "VBG")  # prefixes of tags that modify the NP's head noun
_LINKERS = {"ADVP", "PRT"}  # "walks *down* the street": pattern tags the particle as its own chunk


@dataclass
class _Chunk:
    kind: str  # NP, VP, PP, ADJP, ADVP, PRT, ... or "O" for a token outside any chunk
    words: list[str]
    tags: list[str]


def _chunks(tokens: Sequence[Sequence[str]]) -> list[_Chunk]:
    """Group `[word, tag, chunk-IOB, ...]` tokens into chunks."""
    chunks: list[_Chunk] = []
    for word, tag, iob, *_ in tokens:
        kind = iob.split("-", 1)[1] if "-" in iob else "O"
        if iob.startswith("I-") and chunks and chunks[-1].kind == kind:
            chunks[-1].words.append(word)
            chunks[-1].tags.append(tag)
        else:
            chunks.append(_Chunk(kind, [word], [tag]))
    return chunks


def _head(chunk: _Chunk) -> int | None:
    """Index of the NP's head noun (its last noun), or None for an NP without a noun ("he", "it")."""
    nouns = [i for i, tag in enumerate(chunk.tags) if tag.startswith("NN")]
    return nouns[-1] if chunk.kind == "NP" and nouns else None


def _is_copula(chunk: _Chunk) -> bool:
    verbs = [w.lower() for w, t in zip(chunk.words, chunk.tags) if t.startswith(("VB", "MD"))]
    return bool(verbs) and all(v in _BE for v in verbs)


def _next_object(chunks: list[_Chunk], start: int) -> int | None:
    """Chunk index of the object reached from position `start`: `NP`, `PP NP` or `VP [ADVP|PRT] (NP | PP NP)`."""
    i = start
    if i < len(chunks) and chunks[i].kind == "VP":
        i += 1
        while i < len(chunks) and chunks[i].kind in _LINKERS:
            i += 1
    elif i < len(chunks) and chunks[i].kind != "PP":
        return None
    if i < len(chunks) and chunks[i].kind == "PP":
        i += 1
    if i < len(chunks) and _head(chunks[i]) is not None:
        return i
    return None


def analyse_chunks(tokens: Sequence[Sequence[str]]) -> CaptionSignals:
    """Caption complexity and number of actions of one chunked sentence (fallback for `analyse_doc`).

    Args:
        tokens: `[word, Penn tag, chunk IOB tag, ...]` per token, as `textblob.en.parse(..., chunks=True).split()`
            gives for each sentence.

    Returns:
        The sentence's `CaptionSignals`; see the module docstring for how the rules map onto chunks.
    """
    chunks = _chunks(tokens)
    edges = {i: 0 for i, chunk in enumerate(chunks) if _head(chunk) is not None}
    num_actions = 0
    for i, chunk in enumerate(chunks):
        if i in edges:
            head = _head(chunk)
            edges[i] += sum(1 for tag in chunk.tags[:head] if tag.startswith(_NP_ATTRIBUTE_TAGS))
            following = chunks[i + 1] if i + 1 < len(chunks) else None
            if following is not None and following.kind == "VP" and _is_copula(following):
                if i + 2 < len(chunks) and chunks[i + 2].kind == "ADJP":  # "the car is red"
                    edges[i] += sum(1 for tag in chunks[i + 2].tags if tag.startswith("JJ"))
            other = _next_object(chunks, i + 1)
            if other is not None:  # "dog on the grass", "man rides a bike", "dog is on the grass"
                edges[i] += 1
                edges[other] += 1
        if chunk.kind == "VP" and i > 0 and chunks[i - 1].kind == "NP" and not _is_copula(chunk):
            if any(tag.startswith("VB") for tag in chunk.tags):
                num_actions += 1
    return CaptionSignals(complexity=max(edges.values(), default=0), num_actions=num_actions)


class PatternCaptionParser:
    """CAT caption rules on textblob's bundled Pattern tagger and chunker: offline, no model download."""

    name = "textblob-pattern"

    def __init__(self):
        from textblob.en import parse  # the Pattern lexicon inside the textblob wheel

        self._parse = parse
        parse("a dog")  # loads the lexicon now, once: forked `num_proc` workers inherit it instead of reloading

    def __call__(self, captions: Sequence[str]) -> list[CaptionSignals]:
        signals = []
        for caption in captions:
            sentences = self._parse(caption, tokenize=True, tags=True, chunks=True, relations=False,
                                    lemmata=False).split()
            per_sentence = [analyse_chunks(tokens) for tokens in sentences] or [CaptionSignals(0, 0)]
            signals.append(CaptionSignals(complexity=max(s.complexity for s in per_sentence),
                                          num_actions=sum(s.num_actions for s in per_sentence)))
        return signals


# --------------------------------------------------------------------------------------------------------------
# choosing a parser
# --------------------------------------------------------------------------------------------------------------
_warned_fallback = False


def installed_spacy_pipeline(lang: str = "en") -> str | None:
    """Name of an installed spaCy pipeline package for `lang` with a parser (smallest first), or None."""
    try:
        import spacy.util
    except ImportError:
        return None
    names = sorted(n for n in spacy.util.get_installed_models() if re.match(rf"^{lang}_core_", n))
    order = {"sm": 0, "md": 1, "lg": 2, "trf": 3}
    names.sort(key=lambda n: order.get(n.rsplit("_", 1)[-1], 9))
    return names[0] if names else None


def load_caption_parser(parser: Any = None) -> CaptionParser:
    """The caption parser CAT filtering uses.

    Args:
        parser: `None` (automatic: the smallest installed spaCy English pipeline, else the textblob fallback with a
            one-time warning), `"spacy"` (require spaCy), `"textblob"`/`"pattern"` (the fallback), the name of an
            installed spaCy pipeline, a loaded `spacy.Language`, or any `CaptionParser` (returned unchanged).

    Returns:
        A `CaptionParser`.
    """
    global _warned_fallback
    if parser is None:
        name = installed_spacy_pipeline()
        if name is not None:
            return SpacyCaptionParser(name)
        if not _warned_fallback:
            logger.warning("No spaCy English pipeline is installed (e.g. `python -m spacy download en_core_web_sm`): "
                           "CAT caption rules use textblob's bundled Pattern tagger and chunker instead.")
            _warned_fallback = True
        return PatternCaptionParser()
    if isinstance(parser, str):
        if parser in ("textblob", "pattern"):
            return PatternCaptionParser()
        if parser == "spacy":
            name = installed_spacy_pipeline()
            if name is None:
                raise ValueError("parser='spacy' but no spaCy English pipeline (en_core_web_*) is installed")
            return SpacyCaptionParser(name)
        return SpacyCaptionParser(parser)
    if hasattr(parser, "pipe") and hasattr(parser, "meta"):  # a spacy.Language
        return SpacyCaptionParser(parser)
    if callable(parser):
        return parser
    raise TypeError(f"cannot use {type(parser).__name__} as a caption parser")
