"""The trial function end to end on the tiny random encoder and small real slices."""

import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from trainables import DivergedError, build, fit, train
from trainables.data import eval_batches
from trainables.loop import evaluate, objective


def run(cfg: dict) -> tuple[list[dict], object]:
    rows: list[dict] = []
    result = train(cfg, rows.append)
    return rows, result


def test_reports_every_task_metric_every_epoch(tiny):
    rows, result = run(tiny)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("val/rt/accuracy", "val/rt/macro_f1", "val/vader/pearson", "val/vader/spearman",
                    "val/vader/mse", "val/ner/f1", "train/rt/loss", "objective", "step"):
            assert key in r and math.isfinite(r[key]), key
    assert result.main_metric == {"rt": "accuracy", "vader": "pearson", "ner": "f1"}
    assert result.steps == rows[-1]["step"] == 2 * 4  # joint: max(64/16) batches per epoch


def test_same_seed_same_numbers_on_cpu():
    small = {"device": "cpu", "max_train_examples": 32, "max_eval_examples": 16}
    a, _ = run(tiny_config(**small))
    b, _ = run(tiny_config(**small))
    c, _ = run(tiny_config(seed=1, **small))
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.endswith("seconds") and not k.startswith("memory/")} for r in rows]
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_training_learns_a_real_task():
    cfg = tiny_config(epochs=4, max_train_examples=400, lr=2e-3)
    cfg["tasks"] = {"sms": {"source": "builtin:sms_spam"}}
    rows, result = run(cfg)
    # ham is 87% of messages: macro-F1 of the majority class is about 0.46
    assert result.metrics["sms"]["macro_f1"] > 0.6


# every sharing mode with static weights, and with GradNorm (whose W, the top shared layer,
# each mode makes differently); uncertainty and DWA weigh the losses alike under any mode
@pytest.mark.parametrize(("sharing", "weighting"), [
    *[(m, w) for m in ("hard", "soft", "partial", "single") for w in ("static", "gradnorm")],
    ("soft", "uncertainty"), ("partial", "dwa")])
def test_every_sharing_mode_with_every_weighting_trains(sharing, weighting):
    check_trains(sharing, weighting)


# FAMO with a shared and an unshared encoder; TorchJD's aggregators act on shared parameters, so
# each trains with hard or partial sharing (one code path: one case each); with soft sharing
# there are none, and they are static weighting
@pytest.mark.parametrize(("weighting", "sharing"), [("famo", "hard"), ("famo", "soft"), ("pcgrad", "hard"),
                                                    ("pcgrad", "soft"), ("upgrad", "partial"), ("mgda", "hard"),
                                                    ("cagrad", "partial"), ("nash_mtl", "hard")])
def test_every_step_level_weighting_trains(sharing, weighting):
    check_trains(sharing, weighting)


# LoRA adapters, the encoder frozen (nothing trained is shared: GradNorm reads each task's own
# adapter in the top layer) or trained (an aggregator acts on it); a row counts what trains and
# the peak memory (static weighting with lora: the resume test below)
@pytest.mark.parametrize(("weighting", "train_encoder"), [("gradnorm", False), ("upgrad", True)])
def test_lora_trains_with_weightings(weighting, train_encoder):
    rows = check_trains("lora", weighting, lora_train_encoder=train_encoder, lora_rank=2)
    hard = build(tiny_config()).model.parameter_counts()
    if train_encoder:
        assert rows[-1]["params/trainable"] > hard["params/trainable"]  # the encoder and the adapters
    else:
        assert rows[-1]["params/trainable"] < 0.02 * hard["params/trainable"]
    assert rows[-1]["params/total"] > hard["params/total"] and rows[-1]["memory/peak_rss_mib"] > 0


def check_trains(sharing: str, weighting: str, **train: object) -> list[dict]:
    cfg = tiny_config(sharing=sharing, weighting=weighting, branch_layer=1, epochs=2,
                      max_train_examples=32, max_eval_examples=16, task_weights={"rt": 2.0}, **train)
    rows, result = run(cfg)
    assert len(rows) == 2 and math.isfinite(result.objective)
    if weighting == "static":
        assert rows[-1]["weight/rt"] == 2.0 and rows[-1]["weight/vader"] == 1.0
    return rows


@pytest.mark.parametrize("schedule", ["round_robin", "proportional", "temperature"])
def test_cotraining_schedules_take_one_task_per_step(schedule):
    cfg = tiny_config(schedule=schedule, max_train_examples=32)
    rows, result = run(cfg)
    assert result.steps == 2 * (3 * 2)  # an epoch: as many steps as all tasks have batches


def test_patience_stops_when_validation_stops_improving():
    cfg = tiny_config(epochs=30, patience=1, lr=1e-7, max_train_examples=16, max_eval_examples=16)
    rows, result = run(cfg)
    assert result.stopped == "patience" and len(rows) < 30
    assert result.best_epoch == max(range(len(rows)), key=lambda i: rows[i]["objective"]) + 1


def test_max_steps_caps_optimizer_steps():
    rows, result = run(tiny_config(epochs=10, max_steps=5))
    assert result.steps == 5 and result.stopped == "max_steps"


def test_best_epoch_metrics_are_reported_with_their_steps(tiny):
    rows, result = run(tiny)
    best = rows[result.best_epoch - 1]
    assert result.best_step == best["step"] and result.objective == best["objective"]
    assert result.metrics["rt"]["accuracy"] == best["val/rt/accuracy"]


def test_nan_loss_is_an_error_not_a_silent_number(tiny):
    exp = build(tiny)
    with torch.no_grad():
        for p in exp.model.heads["vader"].parameters():
            p.fill_(float("nan"))
    with pytest.raises(DivergedError, match="task 'vader'"):
        fit(exp, lambda row: None)


@pytest.mark.parametrize(("every", "message"), [(1, r"at step 1 \(diverged\)"), (3, r"at step 1, seen at step 3 "),
                                              (50, r"at step 1, seen at step 4 ")])
def test_a_nan_loss_is_caught_within_the_check_interval_or_at_the_epochs_end(tiny, every, message):
    """Losses are read back every ``nan_check_every`` steps and at an epoch's end (4 steps here);
    the error names the task whose loss went first (vader's head; the shared encoder then spoils
    every task) and its step."""
    exp = build({**tiny, "train": {**tiny["train"], "nan_check_every": every}})
    with torch.no_grad():
        for p in exp.model.heads["vader"].parameters():
            p.fill_(float("nan"))
    rows: list[dict] = []
    with pytest.raises(DivergedError, match=f"task 'vader': training loss is nan {message}"):
        fit(exp, rows.append)
    assert rows == []  # no epoch was reported with a NaN in it


def test_rows_time_training_apart_from_evaluation(tiny):
    rows, _ = run(tiny)
    assert all(0 < r["train_seconds"] < r["seconds"] for r in rows)
    assert rows[1]["seconds"] - rows[0]["seconds"] > rows[1]["train_seconds"]  # the epoch's evaluation on top


def test_padding_to_length_buckets_and_larger_eval_batches_change_no_prediction(tiny):
    """The same weights scored with exact widths in batches of 64, and with widths rounded up to
    16 tokens in batches of 7: padding is masked, so the metrics agree to float noise."""
    tiny = {**tiny, "encoder": {**tiny["encoder"], "max_length": 32}}  # two buckets of 16
    exact = build(tiny)
    bucketed = build({**tiny, "train": {**tiny["train"], "length_bucket": 16, "eval_batch_size": 7}})
    bucketed.model.load_state_dict(exact.model.state_dict())
    widths = {b["input_ids"].shape[1] for s in bucketed.splits.values() for b, _ in
              s["val"].batches(eval_batches(s["val"].lengths, 7))}
    assert widths == {16, 32}  # max_length 32
    a, b = evaluate(exact), evaluate(bucketed)
    for t in a:
        for m in a[t]:
            assert b[t][m] == pytest.approx(a[t][m], abs=1e-5), (t, m)


def test_compiled_encoder_trains_and_keeps_its_parameter_names():
    """``train.compile`` traces the encoder with torch.compile (here with the light aot_eager
    backend; inductor's C++ build takes minutes on CPU and is measured by benchmarks/gpu.py).
    A gradient aggregator trains through it (a compiled backward frees its graph) to the
    numbers it reaches uncompiled, every epoch. One compiled run: each traced shape costs
    seconds on CPU."""
    small = {"weighting": "upgrad", "max_train_examples": 32, "max_eval_examples": 16}
    plain = build(tiny_config(**small))
    exp = build(tiny_config(compile="aot_eager", **small))
    enc = exp.model.encoders["rt"]
    assert enc._compiled_call_impl is not None and plain.model.encoders["rt"]._compiled_call_impl is None
    assert list(exp.model.state_dict()) == list(plain.model.state_dict())
    rows: list[dict] = []
    compiled = fit(exp, rows.append)
    assert len(rows) == 2 and math.isfinite(compiled.objective) and math.isfinite(rows[-1]["train/vader/loss"])
    want: list[dict] = []
    assert compiled.objective == fit(plain, want.append).objective
    assert [r["train/vader/loss"] for r in rows] == pytest.approx([r["train/vader/loss"] for r in want], abs=1e-5)


def test_objective_is_signed_mean_of_main_metrics(tiny):
    exp = build(tiny)
    m = {"rt": {"accuracy": 0.8}, "vader": {"pearson": 0.5}, "ner": {"f1": 0.2}}
    assert objective(exp, m) == pytest.approx(0.5)


@pytest.mark.parametrize(("weighting", "sharing"), [("static", "hard"), ("dwa", "hard"), ("gradnorm", "hard"),
                                                    ("famo", "hard"), ("pcgrad", "hard"), ("static", "lora")])
def test_resuming_from_a_saved_epoch_continues_the_run(tmp_path, weighting, sharing):
    """The uninterrupted run is the one that saved every epoch; with static weighting and hard
    sharing it is checked once against a run that saves nothing (saving changes no number)."""
    cfg = tiny_config(epochs=3, weighting=weighting, sharing=sharing, device="cpu", max_train_examples=32,
                      max_eval_examples=16)
    rows: list[dict] = []

    def save(state: dict) -> None:  # as a checkpoint does: to a file, at once (weights_only load)
        torch.save(state, tmp_path / f"epoch{state['epoch']}.pt")

    fit(build(cfg), rows.append, save_state=save)
    state = torch.load(tmp_path / "epoch1.pt", weights_only=True)
    resumed: list[dict] = []
    result = fit(build(cfg), resumed.append, state=state)
    assert [r["epoch"] for r in resumed] == [2, 3]  # only the epochs after the saved one
    assert result.epochs == 3 and result.steps == rows[-1]["step"]
    assert len(rows) == 3
    # weights, optimizer, schedule, loss-weighting state and batch order all restored: on CPU the
    # resumed epochs are the uninterrupted run's epochs, number for number
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.endswith("seconds") and not k.startswith("memory/")} for r in rows]
    assert strip(resumed) == strip(rows[1:])
    if (weighting, sharing) == ("static", "hard"):
        full, _ = run(cfg)
        assert strip(full) == strip(rows)


def test_the_run_keeps_its_best_epoch_and_scores_it_on_test_once():
    """Only the last row holds test metrics: the best epoch's weights (chosen on validation),
    which the model holds after fit; scoring them again gives the same numbers."""
    from trainables import evaluate

    cfg = tiny_config(epochs=3, lr=3e-3)
    exp = build(cfg)
    rows: list[dict] = []
    result = fit(exp, rows.append)
    assert [any(k.startswith("test/") for k in r) for r in rows] == [False, False, True]
    assert result.test == {t: {m: rows[-1][f"test/{t}/{m}"] for m in ms} for t, ms in result.test.items()}
    assert evaluate(exp, split="test") == result.test
    assert evaluate(exp)["rt"] == result.metrics["rt"]  # the weights are the best epoch's, not the last's
    assert result.objective == max(r["objective"] for r in rows)


def test_a_score_chooses_the_best_epoch_and_the_weights_kept():
    """A search ranks epochs by its own objective (``score``): the kept epoch follows it."""
    rows: list[dict] = []
    cfg = tiny_config(epochs=3, lr=3e-3)
    result = fit(build(cfg), rows.append, score=lambda row: -row["epoch"])  # prefers the first epoch
    assert result.best_epoch == 1 and result.metrics["rt"]["accuracy"] == rows[0]["val/rt/accuracy"]


@pytest.mark.parametrize("sharing", ["hard", "partial"])
def test_the_encoder_reads_a_prepared_padding_mask_and_computes_what_the_2d_mask_gives(tiny, sharing):
    """MultiTaskModel hands an SDPA encoder its mask as (B, 1, 1, L) booleans (no host sync to
    test it for padding); the hidden states are those of the plain 2-D mask, padding included."""
    exp = build({**tiny, "train": {**tiny["train"], "sharing": sharing, "branch_layer": 1}})
    exp.model.eval()
    batch, _ = next(exp.splits["ner"]["val"].batches([np.arange(12)]))
    assert (batch["attention_mask"] == 0).any()  # padded rows
    with torch.no_grad():
        ours = exp.model.encode("ner", batch)
        plain = exp.model.encoders["ner"](input_ids=batch["input_ids"],
                                           attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["attention_mask"].bool()
    assert torch.allclose(ours[keep], plain[keep], atol=1e-5)


@pytest.mark.parametrize("sharing", ["hard", "soft"])
def test_the_kept_weights_hold_each_shared_tensor_once_as_the_model_does(tmp_path, sharing):
    """Hard sharing puts one encoder under every task's name: the best epoch's weights (which
    every epoch's checkpoint carries) keep it one tensor, so they do not grow with the number of
    tasks; per-task encoders (soft sharing) stay apart."""
    exp = build(tiny_config(epochs=1, sharing=sharing, max_train_examples=16, max_eval_examples=16))
    saved: list[dict] = []
    fit(exp, lambda row: None, save_state=saved.append)
    kept, model = saved[-1]["best_weights"], exp.model.state_dict()
    assert kept.keys() == model.keys()
    storages = lambda sd: len({v.untyped_storage().data_ptr() for v in sd.values()})  # noqa: E731
    assert storages(kept) == storages(model)
    shared = [k for k in model if k.startswith("encoders.") and k.endswith("word_embeddings.weight")]
    assert len(shared) == 3 and (storages({k: kept[k] for k in shared}) == 1) is (sharing == "hard")
    torch.save(kept, tmp_path / "kept.pt")
    torch.save(model, tmp_path / "model.pt")
    assert abs((tmp_path / "kept.pt").stat().st_size / (tmp_path / "model.pt").stat().st_size - 1) < 0.01
    back = torch.load(tmp_path / "kept.pt", weights_only=True)
    assert all(torch.equal(back[k], kept[k]) for k in kept)
