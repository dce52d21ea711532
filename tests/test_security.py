"""Security rules, checked on the source of every package (ast, not grep): YAML only through
``yaml.safe_load``, no pickle loads, ``torch.load`` always with ``weights_only=True``, every
``from_pretrained`` passes ``trust_remote_code`` from the user's config, which is off unless
asked. (Loopback-only listening: tests/orchestrator/test_loopback.py.)"""

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


@pytest.mark.parametrize("name", ["load", "unsafe_load", "full_load", "loads"])
def test_no_unsafe_yaml_or_pickle_loads(name):
    for path, node in calls(name):
        f = node.func
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        assert owner not in ("yaml", "pickle", "cloudpickle", "dill"), f"{path}:{node.lineno}: {owner}.{name}"


def test_torch_load_only_with_weights_only():
    found = list(calls("load"))
    torch_loads = [(p, n) for p, n in found if isinstance(n.func, ast.Attribute)
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert torch_loads  # the checkpoint and the tokenization cache are read with it
    for path, node in torch_loads:
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"


def test_remote_code_only_when_the_user_asks():
    found = list(calls("from_pretrained"))
    assert found
    for path, node in found:
        value = keyword(node, "trust_remote_code")
        assert value is not None, f"{path}:{node.lineno}: trust_remote_code not passed (defaults may change)"
        ok = (isinstance(value, ast.Constant) and value.value is False) or \
            (isinstance(value, ast.Attribute) and value.attr == "trust_remote_code")
        assert ok, f"{path}:{node.lineno}"
    assert EncoderSpec().trust_remote_code is False
