"""Data sources, checks, deterministic splits and tokenization."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.data import BUILTIN_TASKS, length_grouped_batches, load_task_data, read_source
from trainables.data.encoded import DeviceSplit, Encoded, bucket
from trainables.data.prepare import _MEMORY, cache_dir
from trainables.encoder import load_tokenizer, tokenizer_id
from trainables.errors import InputError
from trainables.spec import EncoderSpec, TaskSpec, TrainSpec

TOK = load_tokenizer(EncoderSpec(model="builtin:tiny-random"))


def load(name: str, spec: TaskSpec, **train: object):
    return load_task_data(name, spec, TrainSpec(**train), TOK, tokenizer_id=tokenizer_id(TOK), max_length=32)


@pytest.mark.parametrize(
    ("name", "kind", "min_size"),
    [("rt_polarity", "classification", 8000), ("imdb", "classification", 25000),
     ("vader_movies", "regression", 10000), ("vader_tweets", "regression", 4000),
     ("vader_amazon", "regression", 3500), ("vader_nyt", "regression", 5000),
     ("sms_spam", "classification", 4800), ("trec_coarse", "classification", 5300),
     ("trec_fine", "classification", 5300), ("wnut_ner", "tagging", 2300)],
)
def test_every_builtin_task_reads_real_data(name, kind, min_size):
    raw = read_source(name, TaskSpec(source=f"builtin:{name}"))
    assert raw.type == kind == BUILTIN_TASKS[name].type
    assert len(raw.train) >= min_size


def test_builtin_label_spaces_match_their_description():
    assert sorted(set(read_source("t", TaskSpec(source="builtin:trec_coarse")).train.labels)) == \
        ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert len(set(read_source("t", TaskSpec(source="builtin:trec_fine")).train.labels)) == 50
    tags = {t for s in read_source("t", TaskSpec(source="builtin:wnut_ner")).train.labels for t in s}
    assert len({t[2:] for t in tags if t != "O"}) == 10
    vader = read_source("t", TaskSpec(source="builtin:vader_movies")).train.labels
    assert -4 <= min(vader) < 0 < max(vader) <= 4


def test_trec_questions_are_deduplicated():
    texts = read_source("t", TaskSpec(source="builtin:trec_coarse")).train.texts
    assert len(texts) == len(set(texts))


def test_split_is_deterministic_disjoint_and_seed_independent():
    a = load("rt", TaskSpec(source="builtin:rt_polarity"), seed=0, max_train_examples=None)
    _MEMORY.clear()
    b = load("rt", TaskSpec(source="builtin:rt_polarity"), seed=7, max_train_examples=None)
    assert a.train.ids.equal(b.train.ids) and a.val.ids.equal(b.val.ids) and a.test.ids.equal(b.test.ids)
    assert len(a.test) == round(8530 * 0.1)  # held out first, then validation from the rest
    assert len(a.val) == round((8530 - len(a.test)) * 0.2) and len(a.train) == 8530 - len(a.test) - len(a.val)


def test_the_test_split_is_held_out_and_fixed_for_a_builtin_task():
    """Disjoint from training and validation (as example indices), the same under any task name,
    seed, group or training-set cap; only validation depends on the task's name."""
    from trainables.data import raw_splits

    spec = TaskSpec(source="builtin:rt_polarity")
    full = read_source("x", spec).train
    index = {(t, y): i for i, (t, y) in enumerate(zip(full.texts, full.labels))}

    def ids(split):
        return {index[(t, y)] for t, y in zip(split.texts, split.labels)}

    a = raw_splits("rt", spec, TrainSpec(max_train_examples=None))
    b = raw_splits("movies", spec, TrainSpec(max_train_examples=100, seed=3))
    assert ids(a.test) == ids(b.test) and len(ids(a.test)) == 853
    assert not ids(a.test) & (ids(a.train) | ids(a.val)) and not ids(b.test) & (ids(b.train) | ids(b.val))
    assert len(a.train) + len(a.val) + len(a.test) == len(full.texts)  # every example in one split


def test_a_sources_own_test_split_or_file_is_used(tmp_path):
    from trainables.data import raw_splits

    frame = pd.DataFrame({"text": [f"good {i}" for i in range(20)], "label": [i % 2 for i in range(20)]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.head(6).assign(text=[f"held {i}" for i in range(6)]).to_csv(tmp_path / "test.csv", index=False)
    local = raw_splits("t", TaskSpec(source=f"csv:{tmp_path / 'train.csv'}", type="classification",
                                     test=str(tmp_path / "test.csv")), TrainSpec())
    assert local.test.texts == [f"held {i}" for i in range(6)] and len(local.train) + len(local.val) == 20
    hf = raw_splits("t", TaskSpec(source=f"hf:{tmp_path}", type="classification"), TrainSpec())
    assert sorted(hf.test.texts) == sorted(f"held {i}" for i in range(6))  # the folder's "test" split
    assert len(hf.train) + len(hf.val) == 20
    with pytest.raises(InputError, match=r"tasks\.t\.test_split: 'final' not in hf:.* \(splits: "):
        raw_splits("t", TaskSpec(source=f"hf:{tmp_path}", type="classification", test_split="final"), TrainSpec())
    with pytest.raises(InputError, match=r"tasks\.t\.test: file not found: .*nope\.csv"):
        raw_splits("t", TaskSpec(source=f"csv:{tmp_path / 'train.csv'}", type="classification",
                                 test=str(tmp_path / "nope.csv")), TrainSpec())
    with pytest.raises(InputError, match=r"tasks\.t\.test_fraction=0\.01 leaves no test examples of 20"):
        raw_splits("t", TaskSpec(source=f"csv:{tmp_path / 'train.csv'}", type="classification",
                                 test_fraction=0.01), TrainSpec())


def test_tokenized_data_is_cached_on_disk_and_reused(tmp_path, monkeypatch):
    """In its own cache folder: the second load reads the file the first wrote, and never the
    source (reading it fails here), so removing the disk read fails this test."""
    from trainables.data import prepare

    monkeypatch.setenv("MTLO_CACHE_DIR", str(tmp_path))
    _MEMORY.clear()
    spec = TaskSpec(source="builtin:sms_spam")
    first = load("sms", spec, max_train_examples=50)
    files = list((tmp_path / "tokenized").glob("*.pt"))
    assert len(files) == 1 and cache_dir() == tmp_path
    _MEMORY.clear()

    def no_source(*args, **kwargs):
        raise AssertionError("the source was read again: the disk cache was not used")

    monkeypatch.setattr(prepare, "read_source", no_source)
    second = load("sms", spec, max_train_examples=50)
    assert second is not first and second.train.ids.equal(first.train.ids) and second.test.ids.equal(first.test.ids)
    assert second.label_names == ["ham", "spam"]
    _MEMORY.clear()
    files[0].write_bytes(b"not a torch file")  # a corrupt entry is rebuilt from the source, never trusted
    monkeypatch.undo()
    monkeypatch.setenv("MTLO_CACHE_DIR", str(tmp_path))
    assert load("sms", spec, max_train_examples=50).train.ids.equal(first.train.ids)
    _MEMORY.clear()


def test_tagging_labels_sit_on_first_subtoken_only(tmp_path):
    path = tmp_path / "x.conll"
    path.write_text("Washingtonians\tB-geo\nlove\tO\nSeattle\tB-geo\n\nhi\tO\nBob\tB-per\n\n" * 5)
    d = load("tags", TaskSpec(source=f"conll:{path}"), val_fraction=0.5)
    labels = d.train.labels[d.train.offsets[0]: d.train.offsets[1]].tolist()
    words = [lab for lab in labels if lab != -100]
    # CLS and SEP are -100; every word has exactly one labelled sub-token
    assert labels[0] == -100 and labels[-1] == -100
    assert len(words) in (2, 3)
    assert d.label_names[0] == "O"


def test_csv_json_parquet_sources_and_text_pairs(tmp_path):
    rows = [{"premise": f"premise {i}", "hypothesis": f"hyp {i}", "label": i % 3, "score": i / 10}
            for i in range(30)]
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    df.to_parquet(tmp_path / "p.parquet")
    for kind, file in [("csv", "p.csv"), ("json", "p.jsonl"), ("parquet", "p.parquet")]:
        spec = TaskSpec(source=f"{kind}:{tmp_path / file}", type="classification", text="premise",
                        text_pair="hypothesis")
        d = load(f"pairs_{kind}", spec)
        assert d.label_names == ["0", "1", "2"]
        assert d.train.type_ids is not None and int(d.train.type_ids.max()) == 1  # second segment
        reg = load(f"reg_{kind}", TaskSpec(source=f"{kind}:{tmp_path / file}", type="regression",
                                            text="premise", label="score"))
        assert reg.type == "regression" and reg.num_labels == 1


def test_hf_source_through_load_dataset_on_local_files(tmp_path, capfd):
    pd.DataFrame({"sentence": [f"good {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}) \
        .to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"sentence": [f"bad {i}" for i in range(6)], "label": [i % 2 for i in range(6)]}) \
        .to_csv(tmp_path / "validation.csv", index=False)
    spec = TaskSpec(source=f"hf:{tmp_path}", type="classification", text="sentence")
    d = load("hf_folder", spec)
    assert len(d.train) == 18 and len(d.val) == 6 and len(d.test) == 2  # its own validation; test from train
    spec = TaskSpec(source="hf:csv", type="classification", text="sentence",
                    data_files={"train": str(tmp_path / "train.csv")})
    d = load("hf_builder", spec)
    assert len(d.train) + len(d.val) + len(d.test) == 20
    err = capfd.readouterr().err  # the datasets library built each split without drawing its progress bars
    assert "Generating" not in err and "split" not in err, err


@pytest.mark.parametrize(
    ("content", "spec_kw", "fragment"),
    [
        ("text,label\n", {"type": "classification"}, "no examples"),
        ("text,lab\na,1\nb,0\n", {"type": "classification"}, "column 'label' not in"),
        ("text,label\na,x\nb,y\n", {"type": "regression"}, "regression needs numbers"),
        ("text,label\na,0.5\nb,1.25\n", {"type": "classification"}, "use type: regression"),
        ("text,label\na,1\nb,1\n", {"type": "classification"}, "at least 2 classes"),
        ("text,label\na,1\n,0\n", {"type": "classification"}, "empty at row 2"),
    ],
)
def test_bad_tables_name_the_task_and_the_problem(tmp_path, content, spec_kw, fragment):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=fragment) as err:
        load("mytask", TaskSpec(source=f"csv:{path}", **spec_kw))
    assert "mytask" in str(err.value) and "\n" not in str(err.value)


def test_conll_with_mismatched_or_non_bio_tags_is_refused(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tO\nb\tX-LOC\n\n")
    with pytest.raises(InputError, match="not BIO"):
        load("t", TaskSpec(source=f"conll:{bad}"))
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "train.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(InputError, match="has 2 tokens but 1 tags"):
        load("t2", TaskSpec(source=f"hf:{hf_dir}", type="tagging"))


def test_missing_file_and_unknown_builtin():
    with pytest.raises(InputError, match="file not found"):
        load("t", TaskSpec(source="csv:/nonexistent/x.csv", type="classification"))
    with pytest.raises(InputError, match="valid: rt_polarity, imdb"):
        load("t", TaskSpec(source="builtin:nope"))
    with pytest.raises(InputError, match="expected one of 'builtin:NAME'"):
        load("t", TaskSpec(source="just-a-name"))


def _padded_by_hand(split, idx, width, pad_id):
    """The batch as the loop over examples built it before batches were cut by tensor ops."""
    n = len(idx)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    lab = torch.full((n, width), -100, dtype=torch.long) if split.token_labels else None
    for row, i in enumerate(idx):
        s, e = int(split.offsets[i]), int(split.offsets[i + 1])
        ids[row, : e - s] = split.ids[s:e]
        mask[row, : e - s] = 1
        if lab is not None:
            lab[row, : e - s] = split.labels[s:e]
    return {"input_ids": ids, "attention_mask": mask, "labels": lab if lab is not None else split.labels[idx]}


@pytest.mark.parametrize(("source", "multiple"), [("builtin:sms_spam", 1), ("builtin:wnut_ner", 1),
                                                   ("builtin:wnut_ner", 16), ("builtin:vader_movies", 8)])
def test_batches_cut_on_the_device_split_equal_padding_by_hand(source, multiple):
    d = load("t", TaskSpec(source=source), max_train_examples=200)
    split = DeviceSplit(d.train, torch.device("cpu"), pad_id=0, multiple=multiple)
    batches = length_grouped_batches(split.lengths, 16, np.random.default_rng(0))
    widths = set()
    for idx, (batch, n) in zip(batches, split.batches(batches), strict=True):
        longest = int(split.lengths[idx].max())
        width = batch["input_ids"].shape[1]
        widths.add(width)
        assert n == len(idx) and longest <= width <= max(longest, split.cap)
        assert width == longest if multiple == 1 else (width % multiple == 0 or width == split.cap)
        want = _padded_by_hand(d.train, idx, width, 0)
        assert set(batch) == set(want) and all(batch[k].equal(want[k]) for k in want)
        assert d.train.batch(idx, 0)["input_ids"].equal(want["input_ids"][:, :longest])
    if multiple > 1:  # a few shapes, not one per batch length
        assert len(widths) <= split.cap // multiple + 1


def test_bucket_rounds_up_to_the_multiple_but_never_past_the_longest_example():
    assert [bucket(w, 16, 50) for w in (1, 16, 17, 33, 48, 49, 50)] == [16, 16, 32, 48, 48, 50, 50]
    assert bucket(23, 1, 64) == 23 and bucket(64, 16, 64) == 64


def test_text_pair_batches_carry_their_token_type_ids():
    enc = Encoded.build([[1, 5, 2, 6, 2], [1, 7, 2], [1, 8, 9, 2, 3, 2]], [0, 1, 0],
                        type_ids=[[0, 0, 0, 1, 1], [0, 0, 0], [0, 0, 0, 0, 1, 1]])
    split = DeviceSplit(enc, torch.device("cpu"), pad_id=0, multiple=4)
    (batch, n), = split.batches([np.array([2, 1])])
    assert n == 2 and batch["input_ids"].tolist() == [[1, 8, 9, 2, 3, 2], [1, 7, 2, 0, 0, 0]]  # cap 6, not 8
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]] and batch["labels"].tolist() == [0, 1]
