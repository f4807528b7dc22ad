"""Zero-shot evaluation at scale (CLIP's protocol, arXiv 2103.00020; ALBEF's re-ranking, arXiv 2107.07651): under 2 gloo
processes `Trainer.evaluate` gives the metrics of one process on the same data while each process encodes only its
shard (row i on process i mod 2, uneven shards, a stream split while it is read); shards cover every row once; and
retrieval ranks in chunks without ever building the N_img x N_txt similarity matrix."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from datasets import Dataset, Features, Image, IterableDataset, Value
from PIL import Image as PILImage
from torch.overrides import TorchFunctionMode

from evaluation import ClassificationTask, RetrievalTask, image_batches, rank_gallery, retrieval_metrics
from image_text_data.demo import build_word_tokenizer
from image_text_data.images import load_image
from tests.helpers import encode, image_processor, scene_pairs, tiny_model

NUM_ROWS = 7  # odd: the shards of two processes are uneven (rows 0, 2, 4, 6 and 1, 3, 5)
BROKEN_ROW = 3  # undecodable, on process 1: its skip must be counted once, on both processes
NAMES = ["red", "green", "purple"]


def evaluation_rows() -> dict[str, list]:
    """7 rows with image bytes, a label, and one or two distinct captions (no two texts tie)."""
    pairs = scene_pairs(NUM_ROWS, seed=3)
    images = [dict(cell) for cell in pairs["image"]]
    images[BROKEN_ROW] = {"bytes": b"<html>not an image</html>", "path": None}
    captions = [[c, " ".join(c.split()[::-1])] if i % 2 else [c] for i, c in enumerate(pairs["caption"])]
    return {"image": images, "label": [i % 3 for i in range(NUM_ROWS)], "caption": captions}


def evaluation_data() -> Dataset:
    return Dataset.from_dict(evaluation_rows(), features=Features({
        "image": Image(), "label": Value("int64"), "caption": [Value("string")]}))


def evaluation_stream() -> IterableDataset:
    rows = evaluation_rows()

    def generate():
        for i in range(NUM_ROWS):
            yield {"image": rows["image"][i], "label": rows["label"][i]}

    return IterableDataset.from_generator(generate)


def model_and_tokenizer():
    tokenizer = build_word_tokenizer([c for cell in evaluation_rows()["caption"] for c in cell] + NAMES)
    return tiny_model(tokenizer, seed=1).eval(), tokenizer


def arbitrary_scores(images, texts, pairs: torch.Tensor) -> torch.Tensor:
    """A pair re-scorer that reorders candidates in a fixed, data-independent way."""
    return ((pairs[:, 0] * 3 + pairs[:, 1]) % 5).float()


def tasks(data) -> list:
    return [ClassificationTask(data, class_names=NAMES, templates=["a {} shape", "the {} thing"]),
            RetrievalTask(data, caption_template="a photo of {}.", rescorer=arbitrary_scores, rerank_k=4)]


class CountingTokenizer:
    """The tokenizer, recording every text it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, *args, **kwargs):
        self.texts += list(texts)
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def record_image_rows(model, processor) -> list[int]:
    """Wrap `get_image_features` so that it records the dataset row of every image it embeds (-1: none of them)."""
    pixels = {}
    for row, cell in enumerate(evaluation_rows()["image"]):
        if row != BROKEN_ROW:
            pixels[row] = processor(load_image(cell), return_tensors="pt")["pixel_values"][0]
    seen, forward = [], model.get_image_features

    def counting(pixel_values, **kwargs):
        seen.extend(next((row for row, p in pixels.items() if torch.equal(p, x)), -1) for x in pixel_values)
        return forward(pixel_values=pixel_values, **kwargs)

    model.get_image_features = counting
    return seen


def _worker(rank: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    import torch.distributed as dist

    from trainers import DiHTTrainer, DiHTTrainingArguments

    args = DiHTTrainingArguments(out_dir, use_cpu=True, report_to="none", per_device_eval_batch_size=1,
                                 disable_tqdm=True)  # the arguments start the gloo process group
    assert dist.is_initialized() and dist.get_world_size() == 2
    model, tokenizer = model_and_tokenizer()
    tokenizer = CountingTokenizer(tokenizer)
    processor = image_processor()
    image_rows = record_image_rows(model, processor)
    trainer = DiHTTrainer(model=model, args=args, processing_class=tokenizer, eval_tasks=tasks(evaluation_data()),
                          image_processor=processor)
    metrics = trainer.evaluate()  # batches of one image: process 1 has blank steps (row 3, and its last step)
    records = [record.to_dict() for record in trainer.eval_records]
    retrieval_texts = [t for t in tokenizer.texts if t.startswith("a photo of")]
    trainer_image_rows = list(image_rows)
    del image_rows[:]
    stream = tasks(evaluation_stream())[0].run(model, tokenizer, processor, batch_size=2)
    with open(os.path.join(out_dir, f"rank_{rank}.json"), "w") as file:
        json.dump({"metrics": metrics, "records": records, "image_rows": trainer_image_rows,
                   "retrieval_texts": retrieval_texts, "stream": stream.to_dict(),
                   "stream_image_rows": list(image_rows)}, file)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("eval_gloo")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2)
    return [json.loads((out / f"rank_{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture(scope="module")
def one_process() -> list:
    """The same tasks in this process (no process group): the reference."""
    model, tokenizer = model_and_tokenizer()
    return [task.run(model, tokenizer, image_processor(), batch_size=1) for task in tasks(evaluation_data())]


def test_two_processes_report_the_metrics_of_one_process_on_every_process(two_processes, one_process):
    first, second = two_processes
    assert first["metrics"] == second["metrics"]  # early stopping and the best model decide alike everywhere
    expected = {f"eval_{record.name}_{name}": value for record in one_process for name, value in record.metrics.items()}
    assert {key: value for key, value in first["metrics"].items() if key != "epoch"} == expected
    assert any(key.startswith("eval_retrieval_reranked_") for key in expected)
    for got in (first["records"], second["records"]):
        assert got == [record.to_dict() for record in one_process]  # sizes and the skipped image included
    classification, retrieval = one_process
    assert classification.skipped_images == retrieval.skipped_images == 1  # counted once over both processes
    assert classification.num_images == NUM_ROWS - 1 and retrieval.num_texts == 8


def test_each_process_encodes_only_its_shard_of_the_images_and_texts(two_processes):
    first, second = two_processes
    decodable = [row for row in range(NUM_ROWS) if row != BROKEN_ROW]
    for rank, result in enumerate(two_processes):
        mine = [row for row in decodable if row % 2 == rank]
        assert sorted(row for row in result["image_rows"] if row >= 0) == sorted(mine * 2)  # once per task
    # Both ran as many image forwards (a ZeRO-3 forward is collective): process 1 forwarded blanks instead.
    assert len(first["image_rows"]) == len(second["image_rows"]) == 2 * 4
    assert second["image_rows"].count(-1) == 2 * 2 and first["image_rows"].count(-1) == 0
    rows = evaluation_rows()  # the texts of the kept images, in row order, caption by caption
    texts = [f"a photo of {c}." for row, cell in enumerate(rows["caption"]) if row != BROKEN_ROW for c in cell]
    assert first["retrieval_texts"] == texts[0::2] and second["retrieval_texts"] == texts[1::2]


def test_a_stream_is_split_between_the_processes_while_it_is_read(two_processes, one_process):
    for rank, result in enumerate(two_processes):
        assert result["stream"]["metrics"] == one_process[0].metrics
        assert result["stream"]["skipped_images"] == 1 and result["stream"]["num_images"] == NUM_ROWS - 1
        mine = [row for row in range(NUM_ROWS) if row != BROKEN_ROW and row % 2 == rank]
        assert sorted(row for row in result["stream_image_rows"] if row >= 0) == mine


# ---- shards, in one process ------------------------------------------------------------------------------------------

def tiny_images(count: int) -> Dataset:
    return Dataset.from_dict({"image": [{"bytes": encode(PILImage.new("RGB", (8, 8), (i, 0, 0))), "path": None}
                                        for i in range(count)], "row": list(range(count))},
                             features=Features({"image": Image(), "row": Value("int64")}))


@pytest.mark.parametrize("num_rows", [1, 2, 5, 7])
@pytest.mark.parametrize("num_shards", [1, 2, 3, 4])
def test_shards_cover_every_row_exactly_once_for_any_size(num_rows, num_shards):
    data = tiny_images(num_rows)
    served = []
    for shard in range(num_shards):
        for batch in image_batches(data, image_processor(), keep_columns=["row"], batch_size=2,
                                   num_shards=num_shards, shard_index=shard):
            assert batch["row"] == batch["index"].tolist()  # the index is the row in the whole dataset
            assert all(row % num_shards == shard for row in batch["row"])
            served += batch["row"]
    assert sorted(served) == list(range(num_rows))


def test_a_stream_shard_is_read_lazily_and_keeps_global_positions():
    read = []

    def rows():
        for i in range(40):
            read.append(i)
            yield {"image": {"bytes": encode(PILImage.new("RGB", (8, 8), (i, 0, 0))), "path": None}, "label": i}

    batches = iter(image_batches(IterableDataset.from_generator(rows), image_processor(), keep_columns=["label"],
                                 batch_size=3, num_shards=2, shard_index=1))
    first = next(batches)
    assert first["index"].tolist() == first["label"] == [1, 3, 5]
    assert len(read) < 40  # the rest of the stream is not read ahead
    with pytest.raises(ValueError, match="shard_index"):
        image_batches(tiny_images(2), image_processor(), num_shards=2, shard_index=2)


# ---- memory: the similarity matrix is never whole --------------------------------------------------------------------

class _TensorSizes(TorchFunctionMode):
    """Records the shape of every tensor a torch function returns, and the operand shapes of every matmul."""

    def __init__(self):
        super().__init__()
        self.outputs, self.products = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm):
            self.products.append(tuple(result.shape))
        for value in result if isinstance(result, tuple) else (result,):
            if isinstance(value, torch.Tensor):
                self.outputs.append(value.numel())
        return result


def test_chunked_top_k_equals_the_dense_reference_and_never_builds_more_than_chunk_by_gallery():
    generator = torch.Generator().manual_seed(2)
    images = F.normalize(torch.randn(40, 8, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(120, 8, generator=generator), dim=-1)
    for queries, gallery in ((images, texts), (texts, images)):
        dense = (queries @ gallery.t()).topk(10, dim=1).indices  # the reference holds the whole matrix
        with _TensorSizes() as sizes:
            got = rank_gallery(queries, gallery, 10, chunk_size=3)
        torch.testing.assert_close(got, dense)
        assert sizes.products and all(rows <= 3 and columns == len(gallery) for rows, columns in sizes.products)
        assert max(sizes.outputs) < len(images) * len(texts)


def test_retrieval_metrics_rank_in_chunks_of_the_configured_number_of_similarities(monkeypatch):
    import evaluation.retrieval

    monkeypatch.setattr(evaluation.retrieval, "_CHUNK_ELEMENTS", 2 * 120)  # two text-gallery rows per chunk
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(40, 8, generator=generator), dim=-1)
    text_to_image = [i for i in range(40) for _ in range(3)]
    texts = F.normalize(images[text_to_image] + torch.randn(120, 8, generator=generator), dim=-1)
    with _TensorSizes() as sizes:
        metrics = retrieval_metrics(images, texts, text_to_image, ks=(1, 5))
    assert all(rows * columns <= 2 * 120 for rows, columns in sizes.products)
    assert max(sizes.outputs) < 40 * 120
    similarity = images @ texts.t()  # the dense reference
    owner = torch.tensor(text_to_image)
    i2t = (owner[similarity.topk(5, dim=1).indices] == torch.arange(40)[:, None]).any(1).float().mean()
    t2i = (similarity.t().topk(5, dim=1).indices == owner[:, None]).any(1).float().mean()
    assert metrics["image_to_text_recall@5"] == pytest.approx(i2t.item())
    assert metrics["text_to_image_recall@5"] == pytest.approx(t2i.item())
