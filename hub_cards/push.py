"""Upload a model folder with its card to the Hugging Face Hub in one commit.

A DiHT checkpoint (Radenovic et al., CVPR 2023, arXiv 2301.02280) on the Hub is an ordinary transformers repository
plus the modelling code that `trust_remote_code=True` runs for users without this package. `push_to_hub` uploads,
in one `HfApi.create_commit`:

- the weights (`*.safetensors`, `model.safetensors.index.json`) and `config.json`;
- the tokenizer (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`,
  `vocab.json`, `merges.txt`) and the image processor (`preprocessor_config.json`, `processor_config.json`);
- the remote code of the model type (`REMOTE_CODE`: for DiHT `configuration_diht.py`, `modeling_diht.py`,
  `loss_diht.py`). `save_pretrained` writes them, and `config.json`'s `auto_map`, when the classes are registered
  for auto classes (`import modeling_diht` does it). A folder saved otherwise gets the files from the installed
  package and an `auto_map` added to the uploaded `config.json`; the local folder is never modified;
- `README.md`, which must be a card written by `hub_cards` (`allow_foreign_card=True` accepts another);
- `conversion_summary.json` of a converted checkpoint (its provenance: source file and SHA-256).

Nothing else is uploaded: only the folder's top-level files named above, so `checkpoint-*/` folders, `runs/`
(TensorBoard), optimizer, scheduler and RNG states, `trainer_state.json`, `training_args.bin`, DeepSpeed's
`global_step*/` and `zero_to_fp32.py`, and any pickle (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`) stay local. The plan
lists every skipped entry with its reason.

Command line: `python -m hub_cards.push --folder F --repo_id R [--dry_run]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .card import is_generated_card

logger = logging.getLogger(__name__)

__all__ = ["REMOTE_CODE", "RemoteCode", "UploadFile", "UploadPlan", "push_to_hub", "upload_plan"]

DEFAULT_COMMIT_MESSAGE = "Upload model, tokenizer, image processor, remote code and model card (diht-cosmo)"
# Top-level files of a transformers model repository that are uploaded when present (weights: `*.safetensors`).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "conversion_summary.json",
    "README.md",
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_TRAINER_STATE = ("trainer_state.json", "training_args.bin", "zero_to_fp32.py", "latest")


@dataclass(frozen=True)
class RemoteCode:
    """What `trust_remote_code=True` needs for one model type: the package's files and `config.json`'s auto_map."""

    package: str
    files: tuple[str, ...]
    auto_map: dict[str, str]


# The entries `save_pretrained` writes after `import modeling_diht` (tests/test_hub_cards.py checks they agree).
REMOTE_CODE: dict[str, RemoteCode] = {
    "diht": RemoteCode(
        package="modeling_diht",
        files=("configuration_diht.py", "modeling_diht.py", "loss_diht.py"),
        auto_map={
            "AutoConfig": "configuration_diht.DiHTConfig",
            "AutoModel": "modeling_diht.DiHTModel",
            "AutoModelForZeroShotImageClassification": "modeling_diht.DiHTModel",
        },
    ),
}


@dataclass(frozen=True)
class UploadFile:
    """One file of the commit: its path in the repository, and a local file or the bytes to upload."""

    path_in_repo: str
    source: Path | bytes
    note: str = ""

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


@dataclass
class UploadPlan:
    """The files one push uploads, and the folder's entries it leaves out with the reason."""

    files: list[UploadFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self, repo_id: str, revision: str | None = None) -> str:
        """A listing for people: every file with its size, the total, and the skipped entries."""
        target = f"{repo_id}" + (f" (revision {revision})" if revision else "")
        lines = [f"{len(self.files)} files for {target}, {_size(sum(f.size for f in self.files))} in all:"]
        width = max((len(f.path_in_repo) for f in self.files), default=0)
        for item in self.files:
            note = f"  [{item.note}]" if item.note else ""
            lines.append(f"  {item.path_in_repo:<{width}}  {_size(item.size):>10}{note}")
        if self.skipped:
            lines.append(f"left out ({len(self.skipped)}):")
            lines += [f"  {name}  ({reason})" for name, reason in self.skipped]
        return "\n".join(lines)


def _size(num_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError  # unreachable: the loop returns at "GB"


def _skip_reason(path: Path) -> str:
    name = path.name
    if path.is_dir():
        if name.startswith("checkpoint-"):
            return "Trainer checkpoint"
        if name == "runs":
            return "TensorBoard logs"
        if name.startswith("global_step"):
            return "DeepSpeed checkpoint"
        return "subfolder: only top-level files are uploaded"
    if name in _TRAINER_STATE:
        return "training state"
    if name.endswith(_PICKLE_SUFFIXES):
        return "pickle: optimizer/scheduler/RNG state or non-safetensors weights"
    if name.startswith("."):
        return "hidden file"
    return "not a file of a transformers model repository"


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the installed package without importing more of it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} package is not installed; its files are needed as remote code")
    return Path(next(iter(spec.submodule_search_locations)))


def _remote_code(folder: Path, config: dict) -> list[UploadFile]:
    """The remote-code files, and `config.json` with an `auto_map` added when the saved one lacks entries."""
    spec = REMOTE_CODE.get(config.get("model_type"))
    config_file = UploadFile("config.json", folder / "config.json")
    if spec is None:  # a model type transformers knows natively needs no remote code
        return [config_file]
    files = []
    for name in spec.files:
        if (folder / name).is_file():
            files.append(UploadFile(name, folder / name))
        else:
            files.append(UploadFile(name, _package_folder(spec.package) / name, f"from the installed {spec.package}"))
    auto_map = config.get("auto_map") or {}
    if any(key not in auto_map for key in spec.auto_map):  # entries the saved config has are kept as they are
        patched = {**config, "auto_map": {**spec.auto_map, **auto_map}}
        config_file = UploadFile("config.json", (json.dumps(patched, indent=2, sort_keys=True) + "\n").encode(),
                                 "auto_map added for trust_remote_code")
    return [config_file, *files]


def _check_required(folder: Path, names: set[str], allow_foreign_card: bool) -> None:
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(name.endswith(".safetensors") for name in names):
        missing.append("weights as *.safetensors (save with save_pretrained; pickled weights are not uploaded)")
    if "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= names:
        missing.append("a tokenizer (tokenizer.json, or vocab.json + merges.txt: tokenizer.save_pretrained)")
    if "preprocessor_config.json" not in names:
        missing.append("preprocessor_config.json (image_processor.save_pretrained)")
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not a complete model folder; missing: " + "; ".join(missing))
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no README.md: write the model card first with "
                                "hub_cards.write_model_card(folder, ...) (or use hub_cards.publish)")
    if not allow_foreign_card and not is_generated_card(readme):
        raise ValueError(f"{str(readme)!r} was not written by hub_cards (no {'generated by'!r} marker): render it "
                         "with hub_cards.write_model_card(folder, overwrite=True, ...), or pass "
                         "allow_foreign_card=True to upload it as it is")


def upload_plan(folder: str | Path, *, allow_foreign_card: bool = False) -> UploadPlan:
    """Decide what a push of `folder` uploads (rule: module docstring), without touching the network.

    Args:
        folder: a model folder written by `save_pretrained` (model, tokenizer, image processor) or the converter,
            with its card in README.md.
        allow_foreign_card: accept a README.md that `hub_cards` did not write.

    Returns:
        The plan: files sorted by path in the repository, and the entries left out with their reasons.

    Raises:
        FileNotFoundError: no such folder, or it lacks config.json, safetensors weights, a tokenizer, the image
            processor config or README.md.
        ValueError: README.md is not a hub_cards card and `allow_foreign_card` is False.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    entries = sorted(folder.iterdir())
    names = {entry.name for entry in entries if entry.is_file()}
    _check_required(folder, names, allow_foreign_card)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))

    plan = UploadPlan(files=_remote_code(folder, config))
    taken = {item.path_in_repo for item in plan.files}
    for entry in entries:
        if entry.name in taken:
            continue
        if entry.is_file() and (entry.name in MODEL_FILES or entry.name.endswith(".safetensors")):
            plan.files.append(UploadFile(entry.name, entry))
        else:
            plan.skipped.append((entry.name + ("/" if entry.is_dir() else ""), _skip_reason(entry)))
    plan.files.sort(key=lambda item: item.path_in_repo)
    return plan


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    allow_foreign_card: bool = False,
) -> list[str] | CommitInfo:
    """Upload a model folder and its card to the Hub in one commit (DiHT, arXiv 2301.02280).

    Creates the repository if needed (`HfApi.create_repo(exist_ok=True)`), and the branch `revision` if it is not
    `main`, then uploads the files of `upload_plan` with one `HfApi.create_commit`. A dry run prints the plan
    and returns the paths, touching no network. Call it from one process only (the main one in a distributed run).

    Args:
        folder: the model folder, with README.md written by `hub_cards.write_model_card`.
        repo_id: `namespace/name` of the model repository.
        dry_run: list what would be uploaded, upload nothing.
        private: visibility of a repository created now (None: the account's default); an existing one is unchanged.
        token: Hub token (default: the logged-in one, `HF_TOKEN`).
        commit_message: default `DEFAULT_COMMIT_MESSAGE`.
        revision: the branch to commit to (default `main`).
        allow_foreign_card: upload a README.md that `hub_cards` did not write.

    Returns:
        Dry run: the paths in the repository, sorted. Otherwise the `CommitInfo` of the commit.

    Raises:
        FileNotFoundError, ValueError: see `upload_plan`.
    """
    plan = upload_plan(folder, allow_foreign_card=allow_foreign_card)
    print(("Dry run, nothing uploaded. " if dry_run else "Uploading ") + plan.describe(repo_id, revision))
    if dry_run:
        return [item.path_in_repo for item in plan.files]
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    operations = [
        CommitOperationAdd(path_in_repo=item.path_in_repo,
                           path_or_fileobj=item.source if isinstance(item.source, bytes) else str(item.source))
        for item in plan.files
    ]
    info = api.create_commit(repo_id, operations=operations, commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                             revision=revision, repo_type="model")
    print(f"Pushed {len(operations)} files to {info.commit_url}")
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line: push a model folder with its card (`--dry_run` lists the files and uploads nothing)."""
    parser = argparse.ArgumentParser(prog="python -m hub_cards.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="model folder with its hub_cards README.md")
    parser.add_argument("--repo_id", required=True, help="namespace/name of the Hub model repository")
    parser.add_argument("--dry_run", action="store_true", help="list the files that would be uploaded; upload nothing")
    parser.add_argument("--private", action="store_true", default=None, help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (default: main)")
    parser.add_argument("--commit_message")
    parser.add_argument("--allow_foreign_card", action="store_true", help="upload a README.md not written by hub_cards")
    args = parser.parse_args(argv)
    try:
        push_to_hub(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private, revision=args.revision,
                    commit_message=args.commit_message, allow_foreign_card=args.allow_foreign_card)
    except (FileNotFoundError, ValueError) as error:  # bad input: a message, not a traceback
        raise SystemExit(f"error: {error}") from error
    return 0


if __name__ == "__main__":
    main()
