"""Security rules, checked on the source of every package (ast, not grep, through any import
alias, and each check shown to catch a planted case): YAML only through safe loaders, no
pickle-like loads (nor numpy's allow_pickle, nor pandas.read_pickle), ``torch.load`` always
with ``weights_only=True``, every ``from_pretrained`` passes ``trust_remote_code`` from the
user's config, which is off unless asked. (Loopback-only listening:
tests/orchestrator/test_loopback.py.)"""

import ast
from pathlib import Path

import pytest

from trainables.spec import EncoderSpec

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "trainables", "search_spaces", "benchmarks")
SOURCES = sorted(p for d in PACKAGES for p in (REPO / d).rglob("*.py"))


def calls(name: str):
    """(file, call node) for every call of an attribute or function called ``name``."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if called == name:
                    yield path.relative_to(REPO), node


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def test_sources_found():
    assert len(SOURCES) > 30


PICKLERS = {"pickle", "cloudpickle", "dill", "shelve", "marshal", "joblib"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}


def unsafe_loads(source: str) -> list[str]:
    """Every call in ``source`` that can run code while reading data, through any import alias:
    a pickle-like module's load/loads/Unpickler, yaml's non-safe loaders, ``numpy.load`` with
    ``allow_pickle=True``, ``pandas.read_pickle``."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> module
    names: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name.split(".")[0]] = a.name.split(".")[0] if not a.asname else a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = (node.module.split(".")[0], a.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            module, attr = modules.get(f.value.id, f.value.id), f.attr
        elif isinstance(f, ast.Name) and f.id in names:
            module, attr = names[f.id]
        else:
            continue
        allow = keyword(node, "allow_pickle")
        if (module in PICKLERS and attr in ("load", "loads", "Unpickler")) \
                or (module == "yaml" and attr in UNSAFE_YAML) \
                or (module == "pandas" and attr == "read_pickle") \
                or (module == "numpy" and attr == "load" and not (isinstance(allow, ast.Constant)
                                                                  and allow.value is False) and allow is not None):
            found.append(f"line {node.lineno}: {module}.{attr}")
    return found


PLANTED = [
    "import pickle as p\np.loads(b'')", "from pickle import loads\nloads(b'')", "import dill\ndill.load(f)",
    "from pickle import Unpickler as U\nU(f).load()", "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml as y\ny.unsafe_load(s)", "from yaml import full_load\nfull_load(s)",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)", "import pandas as pd\npd.read_pickle('x.pkl')",
    "from pandas import read_pickle\nread_pickle('x.pkl')",
]
SAFE = ["import yaml\nyaml.safe_load(s)", "import numpy as np\nnp.load('x.npy')",
        "import numpy as np\nnp.load('x.npy', allow_pickle=False)", "import json\njson.loads(s)",
        "import torch\ntorch.load(p, weights_only=True)"]


@pytest.mark.parametrize("snippet", PLANTED)
def test_the_check_catches_a_planted_unsafe_load(snippet):
    assert len(unsafe_loads(snippet)) == 1, snippet


@pytest.mark.parametrize("snippet", SAFE)
def test_the_check_passes_safe_reads(snippet):
    assert unsafe_loads(snippet) == [], snippet


def test_no_source_file_loads_unsafely():
    bad = {str(p.relative_to(REPO)): found for p in SOURCES if (found := unsafe_loads(p.read_text()))}
    assert bad == {}


def test_torch_load_only_with_weights_only():
    found = list(calls("load"))
    torch_loads = [(p, n) for p, n in found if isinstance(n.func, ast.Attribute)
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert torch_loads  # the checkpoint and the tokenization cache are read with it
    for path, node in torch_loads:
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"


def test_remote_code_only_when_the_user_asks():
    """Training reads it from the user's config (``spec.encoder.trust_remote_code``); loading a
    saved model (trainables/serving.py) only from its caller's argument, never from the model's
    own files (a model from a shared registry would decide to run its own code)."""
    found = list(calls("from_pretrained"))
    assert found
    for path, node in found:
        value = keyword(node, "trust_remote_code")
        assert value is not None, f"{path}:{node.lineno}: trust_remote_code not passed (defaults may change)"
        constant = isinstance(value, ast.Constant) and value.value is False
        if path.name == "serving.py":
            ok = constant or (isinstance(value, ast.Name) and value.id == "trust_remote_code")
        else:
            ok = constant or (isinstance(value, ast.Attribute) and value.attr == "trust_remote_code")
        assert ok, f"{path}:{node.lineno}: trust_remote_code from {ast.unparse(value)}"
    assert EncoderSpec().trust_remote_code is False
