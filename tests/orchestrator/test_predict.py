"""``mtlo predict`` and the model folder it reads (trainables/serving.py), without MLflow or
training: a tiny model saved untrained is loaded back and must answer exactly as the model
in memory; every bad input is one line naming the file or field, exit 2, nothing written."""

import json

import pytest

from tests.conftest import mtlo_main, tiny_config
from trainables import build, evaluate
from trainables.serving import Predictor, save_model, spans


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    exp = build(tiny_config(max_eval_examples=24))
    save_model(exp, folder / "m")
    return folder / "m", exp


def test_a_saved_model_answers_as_the_model_in_memory(model_dir):
    """The folder's predictions, scored like training scores them, give the same test metrics."""
    import numpy as np
    from scipy import stats
    from seqeval.metrics import f1_score

    from trainables.data import raw_splits

    folder, exp = model_dir
    want = evaluate(exp, split="test")
    predictor = Predictor(folder, device="cpu")
    for task in ("rt", "vader", "ner"):
        test = raw_splits(task, exp.spec.tasks[task], exp.spec.train).test
        texts = [" ".join(t) if isinstance(t, list) else t for t in test.texts]
        preds = [p[task] for p in predictor.predict(texts, tasks=[task], batch_size=7)]
        if task == "rt":
            got, key = float(np.mean([p["label"] == y for p, y in zip(preds, test.labels)])), "accuracy"
        elif task == "vader":
            got, key = float(stats.pearsonr([p["value"] for p in preds], test.labels)[0]), "pearson"
        else:
            got, key = float(f1_score(test.labels, [p["tags"] for p in preds], zero_division=0)), "f1"
        assert got == pytest.approx(want[task][key], abs=1e-4), task


def test_a_lora_model_answers_as_in_memory_and_its_adapters_load_with_peft(tmp_path):
    """train.sharing: lora. The folder's predictions are the trained model's, and each task's
    adapter, saved the PEFT way, gives that task's encoder on the saved encoder weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModel

    from trainables import fit

    exp = build(tiny_config(sharing="lora", epochs=1, lr=1e-2, max_train_examples=48, max_eval_examples=16))
    fit(exp, lambda row: None)  # trained: an untrained adapter adds nothing (PEFT starts lora_B at zero)
    save_model(exp, tmp_path / "m")
    predictor = Predictor(tmp_path / "m", device="cpu")
    batch = dict(predictor.tokenizer(["a fine film", "a dull one"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")
    exp.model.eval()
    with torch.no_grad():
        for t in ("rt", "vader"):
            assert torch.allclose(predictor.model(t, batch), exp.model(t, batch), atol=1e-6), t
        base = AutoModel.from_config(AutoConfig.from_pretrained(tmp_path / "m" / "encoder"), add_pooling_layer=False)
        prefix = "encoders.rt.peft.base_model.model."
        base.load_state_dict({k[len(prefix):].replace(".base_layer", ""): v for k, v in exp.model.state_dict().items()
                              if k.startswith(prefix) and "lora_" not in k})
        hidden = {t: exp.model.encoders[t](**batch).last_hidden_state for t in ("rt", "vader")}
        assert not torch.allclose(hidden["rt"], hidden["vader"])  # two adapters, two encoders
        peft = PeftModel.from_pretrained(base, str(tmp_path / "m" / "adapters" / "vader")).eval()
        assert torch.allclose(peft(**batch).last_hidden_state, hidden["vader"], atol=1e-6)


def test_bio_tags_become_entity_spans():
    assert spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG", "O"]) == \
        [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 5, 5)]  # an I- without its B- starts one
    assert spans(["O", "O"]) == [] and spans(["I-X", "I-X"]) == [("X", 0, 1)]


def test_predict_writes_json_lines_or_csv(model_dir, tmp_path, capsys):
    folder, _ = model_dir
    (tmp_path / "in.txt").write_text("a fine film\nLondon calls Bob Smith\n")
    rc, out, err = mtlo_main("predict", str(folder), "in.txt", cwd=tmp_path, capsys=capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["a fine film", "London calls Bob Smith"]
    assert set(rows[0]["rt"]) == {"label", "probability"} and rows[0]["rt"]["label"] in ("negative", "positive")
    assert set(rows[0]["vader"]) == {"value"} and len(rows[1]["ner"]["tags"]) == 4
    for e in rows[1]["ner"]["entities"]:
        assert rows[1]["text"][e["start"]:e["end"]] == e["text"]
    rc, _, err = mtlo_main("predict", str(folder), "in.txt", "--tasks", "rt", "--out", "p.csv", cwd=tmp_path,
                           capsys=capsys)
    assert rc == 0 and "2 predictions (rt) written to p.csv" in err
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["text", "rt.label", "rt.probability"] and len(frame) == 2
    rc, out, _ = mtlo_main("predict", str(folder), "in.txt", "--json", cwd=tmp_path, capsys=capsys)
    summary = json.loads(out)
    assert rc == 0 and summary["count"] == 2 and len(summary["predictions"]) == 2 and summary["device"] == "cpu"


@pytest.mark.parametrize(("model", "input_name", "content", "args", "expect"), [
    ("nope", "in.txt", "x\n", [], "nope: no such model folder"),
    (".", "in.txt", "x\n", [], ".: not a model folder (no MLmodel or mtlo_model.json in it)"),
    ("M", "missing.csv", None, [], "missing.csv: input file not found"),
    ("M", "in.tsv", "x\n", [], "in.tsv: input must be .csv, .jsonl, .txt"),
    ("M", "in.txt", "", [], "in.txt: no texts in the file"),
    ("M", "in.txt", "one\n\ntwo\n", [], "in.txt:2: empty line"),
    ("M", "in.csv", "sentence\nhello\n", [], "in.csv: text: no 'text' column (columns: sentence)"),
    ("M", "in.csv", "text\n", [], "in.csv: no rows in the file"),
    ("M", "in.csv", "text,label\na,b,c\n", [], "in.csv: some rows have more fields than the header"),
    ("M", "in.jsonl", '{"text": "a"}\n{"text": ""}\n', [], "in.jsonl: text: empty at row 2"),
    ("M", "in.csv", "text,text_pair\na,b\n", [], "in.csv: text_pair: the input has text pairs, but no task "
                                                 "of this model reads them (rt: classification, vader: regression, "
                                                 "ner: tagging)"),
    ("M", "in.txt", "x\n", ["--tasks", "rt,sst"], "--tasks: unknown task(s) sst (this model has: rt, vader, ner)"),
    ("M", "in.txt", "x\n", ["--out", "p.parquet"], "--out p.parquet: must end in .jsonl or .csv"),
    ("M", "in.txt", "x\n", ["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
])
def test_bad_predict_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, model, input_name, content,
                                                          args, expect):
    folder, _ = model_dir
    if content is not None:
        (tmp_path / input_name).write_text(content)
    out_args = [] if "--out" in args else ["--out", "p.jsonl"]  # an output that must not appear
    rc, _, err = mtlo_main("predict", str(folder) if model == "M" else model, input_name, *args, *out_args,
                           cwd=tmp_path, capsys=capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mtlo: error: ") and expect in lines[0], (expect, lines[0])
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "p.parquet").exists()


def test_an_unknown_registered_model_is_one_line(tmp_path, mlflow_db, capsys):
    uri = f"sqlite:///{mlflow_db}"  # a store with no models in it
    (tmp_path / "in.txt").write_text("x\n")
    rc, _, err = mtlo_main("predict", "models:/nothing/1", "in.txt", "--tracking-uri", uri, cwd=tmp_path,
                           capsys=capsys)
    assert rc == 2 and err.startswith("mtlo: error: models:/nothing/1: cannot load the model: ")
    assert len(err.strip().splitlines()) == 1
    rc, _, err = mtlo_main("predict", "models:/nothing/1", "in.txt", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and err.strip() == f"mtlo: error: --tracking-uri: no MLflow store at {tmp_path / 'none.db'}"
