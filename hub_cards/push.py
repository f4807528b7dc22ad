"""Upload a model folder with its card to the Hugging Face Hub in one commit (`HfApi.upload_folder`).

A checkpoint of this library on the Hub is an ordinary transformers repository plus the modelling code that
`trust_remote_code=True` runs for users without the package. `push_to_hub` uploads, in one commit:

- the weights (`*.safetensors`, `model.safetensors.index.json`) and `config.json`;
- the tokenizer (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`,
  `vocab.json`, `vocab.txt`, `merges.txt`) and the image processor (`preprocessor_config.json`,
  `processor_config.json`);
- the remote code of the model type, as its package declares it (`hub_cards.recipes`: for DiHT
  `configuration_diht.py`, `modeling_diht.py`, `loss_diht.py`). `save_pretrained` writes them, and `config.json`'s
  `auto_map`, when the classes are registered for auto classes (`import modeling_diht` does it); a folder saved
  otherwise is completed before the upload: the files are copied from the installed package and the missing
  `auto_map` entries are added to its `config.json`;
- `README.md`, which must be a card written by `hub_cards` (`allow_foreign_card=True` accepts another);
- `conversion_summary.json` of a converted checkpoint (its provenance: source file and SHA-256).

Nothing else: `upload_folder` gets these names as `allow_patterns` and ignores every sub-folder and pickle, so
`checkpoint-*/`, `runs/` (TensorBoard), optimizer, scheduler and RNG states, `trainer_state.json`,
`training_args.bin`, DeepSpeed's `global_step*/` and `zero_to_fp32.py`, and any pickle (`*.bin`, `*.pt`, `*.pth`,
`*.ckpt`) stay local. The plan lists every skipped entry with its reason.

Command line (writes the card first when given card options or when the folder has none):

    python -m hub_cards.push --folder diht-b16 --repo_id me/diht-b16 --license cc-by-nc-4.0 \\
        --results_json outputs/zero_shot/results.json [--dry_run]
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi
from transformers import HfArgumentParser

from .card import DEFAULT_LICENSE, is_generated_card
from .recipes import RECIPES

logger = logging.getLogger(__name__)

__all__ = ["ALLOW_PATTERNS", "IGNORE_PATTERNS", "UploadFile", "UploadPlan", "complete_remote_code", "push_to_hub",
           "upload_plan"]

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
    "vocab.txt",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "conversion_summary.json",
    "README.md",
)
ALLOW_PATTERNS = (*MODEL_FILES, "*.safetensors")  # plus the model type's remote-code files
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
IGNORE_PATTERNS = ("*/*", ".*", *(f"*{suffix}" for suffix in _PICKLE_SUFFIXES))  # sub-folders, hidden files, pickles
_TRAINER_STATE = ("trainer_state.json", "training_args.bin", "zero_to_fp32.py", "latest")


@dataclass(frozen=True)
class UploadFile:
    """One file of the commit: its path in the repository, where it comes from, and a note for people."""

    path_in_repo: str
    source: Path
    note: str = ""

    @property
    def size(self) -> int:
        return self.source.stat().st_size


@dataclass
class UploadPlan:
    """The files one push uploads, the folder's entries it leaves out with the reason, and what completing the
    folder's remote code adds (`complete_remote_code`)."""

    files: list[UploadFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_auto_map: dict[str, str] = field(default_factory=dict)

    def describe(self, repo_id: str, revision: str | None = None) -> str:
        """A listing for people: every file with its size, the total, and the skipped entries."""
        target = f"{repo_id}" + (f" (revision {revision})" if revision else "")
        lines = [f"{len(self.files)} files for {target}, {_size(sum(f.size for f in self.files))} in all:"]
        width = max((len(f.path_in_repo) for f in self.files), default=0)
        for item in self.files:
            note = f"  [{item.note}]" if item.note else ""
            lines.append(f"  {item.path_in_repo:<{width}}  {_size(item.size):>10}{note}")
        if self.missing_auto_map:
            lines.append(f"config.json gets the auto_map entries {sorted(self.missing_auto_map)} for "
                         "trust_remote_code")
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
    import importlib.util

    spec = importlib.util.find_spec(package)  # locates the installed package without importing more of it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} package is not installed; its files are needed as remote code")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_required(folder: Path, names: set[str], allow_foreign_card: bool) -> None:
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not any(name.endswith(".safetensors") for name in names):
        missing.append("weights as *.safetensors (save with save_pretrained; pickled weights are not uploaded)")
    if not ({"tokenizer.json", "vocab.txt"} & names) and not {"vocab.json", "merges.txt"} <= names:
        missing.append("a tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt: "
                       "tokenizer.save_pretrained)")
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


def _remote_code_of(config: dict) -> tuple[str | None, tuple[str, ...], dict[str, str]]:
    recipe = RECIPES.get(config.get("model_type"))
    if recipe is None:  # a model type transformers knows natively needs no remote code
        return None, (), {}
    files, auto_map = recipe.remote_code()
    return recipe.package, tuple(files), dict(auto_map)


def upload_plan(folder: str | Path, *, allow_foreign_card: bool = False) -> UploadPlan:
    """Decide what a push of `folder` uploads (rule: module docstring), without touching the network.

    Args:
        folder: a model folder written by `save_pretrained` (model, tokenizer, image processor) or a converter,
            with its card in README.md.
        allow_foreign_card: accept a README.md that `hub_cards` did not write.

    Returns:
        The plan: files sorted by path in the repository, the entries left out with their reasons, the `auto_map`
        entries `config.json` lacks.

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
    package, code_files, auto_map = _remote_code_of(config)
    plan = UploadPlan()
    saved_map = config.get("auto_map") or {}
    plan.missing_auto_map = {key: value for key, value in auto_map.items() if key not in saved_map}
    for name in code_files:
        if name not in names:
            plan.files.append(UploadFile(name, _package_folder(package) / name, f"from the installed {package}"))
    for entry in entries:
        if entry.is_file() and (entry.name in MODEL_FILES or entry.name.endswith(".safetensors")
                                or entry.name in code_files):
            plan.files.append(UploadFile(entry.name, entry))
        else:
            plan.skipped.append((entry.name + ("/" if entry.is_dir() else ""), _skip_reason(entry)))
    plan.files.sort(key=lambda item: item.path_in_repo)
    return plan


def complete_remote_code(folder: str | Path, plan: UploadPlan | None = None) -> list[str]:
    """Copy the model type's missing remote-code files into `folder` and add the missing `auto_map` entries to its
    `config.json` (what `save_pretrained` writes after `import modeling_diht`). Returns what was added."""
    folder = Path(folder)
    plan = plan or upload_plan(folder, allow_foreign_card=True)
    added = []
    for item in plan.files:
        if item.source.parent.resolve() != folder.resolve():
            shutil.copyfile(item.source, folder / item.path_in_repo)
            added.append(item.path_in_repo)
    if plan.missing_auto_map:
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["auto_map"] = {**plan.missing_auto_map, **(config.get("auto_map") or {})}
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        added.append("config.json auto_map")
    return added


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
    """Upload a model folder and its card to the Hub in one commit.

    Creates the repository if needed (`HfApi.create_repo(exist_ok=True)`) and the branch `revision` if it is not
    `main`, completes the folder's remote code (`complete_remote_code`), then uploads it with one
    `HfApi.upload_folder` restricted to the plan's files (`ALLOW_PATTERNS`, `IGNORE_PATTERNS`). A dry run prints the
    plan and returns the paths, touching neither the network nor the folder. Call it from one process only.

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
    paths = [item.path_in_repo for item in plan.files]
    if dry_run:
        return paths
    complete_remote_code(folder, plan)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                             commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                             allow_patterns=sorted({*ALLOW_PATTERNS, *paths}), ignore_patterns=list(IGNORE_PATTERNS))
    print(f"Pushed {len(paths)} files to {info.commit_url}")
    return info


@dataclass
class PushArguments:
    """`python -m hub_cards.push`: write the card of a model folder (when asked, or when it has none), then push."""

    folder: str = field(metadata={"help": "The model folder (save_pretrained or a converter's output)."})
    repo_id: str = field(metadata={"help": "namespace/name of the Hub model repository."})
    dry_run: bool = field(default=False, metadata={"help": "Write the card and list the files; upload nothing."})
    private: bool | None = field(default=None, metadata={"help": "Create the repository as private."})
    revision: str | None = field(default=None, metadata={"help": "The branch to commit to (default: main)."})
    commit_message: str | None = field(default=None, metadata={"help": "The commit message."})
    write_card: bool = field(default=False, metadata={
        "help": "(Re)write README.md with hub_cards before pushing (implied by the card options below)."})
    results_json: list[str] | None = field(default=None, metadata={
        "help": "Evaluation results (records as examples/zero_shot.py writes them) for the card's table and "
                "model-index."})
    license: str | None = field(default=None, metadata={
        "help": f"Hub license id of the card (default: cc-by-nc-4.0 for a converted DiHT checkpoint, the license "
                f"of the official weights; else {DEFAULT_LICENSE})."})
    base_model: str | None = field(default=None, metadata={"help": "Hub model id the weights derive from."})
    allow_foreign_card: bool = field(default=False, metadata={"help": "Upload a README.md not written by hub_cards."})


def main(argv: list[str] | None = None) -> int:
    """Command line: see `PushArguments` and the module docstring."""
    from .eval_results import eval_results_from, load_results
    from .publish import publish

    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    try:
        card_asked = args.write_card or args.results_json or args.license or args.base_model
        if card_asked or not (Path(args.folder) / "README.md").is_file():
            results = load_results(args.results_json) if args.results_json else None
            eval_results_from(results or [])  # checks every record before anything is written
            publish(args.folder, args.repo_id, results=results, license=args.license,
                    base_model=args.base_model, dry_run=args.dry_run, private=args.private,
                    commit_message=args.commit_message, revision=args.revision)
        else:
            push_to_hub(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private,
                        revision=args.revision, commit_message=args.commit_message,
                        allow_foreign_card=args.allow_foreign_card)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # bad input: a message, not a traceback
        raise SystemExit(f"error: {error}") from error
    return 0


if __name__ == "__main__":
    main()
