"Shared paths and helpers for the tests: nothing here needs the network or ../shared."
import json, sys, tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'


def read_json(path): return json.loads(Path(path).read_text(encoding='utf-8'))


@pytest.fixture(scope='session')
def pyproject() -> dict: return tomllib.loads((ROOT / 'pyproject.toml').read_text())


@pytest.fixture(scope='session')
def lessons() -> list:
    "The lesson notebooks, in syllabus order (file-name order): every notebook but the home page and scratch ones."
    return sorted(p for p in NBS.glob('*.ipynb') if p.name != 'index.ipynb' and not p.name.startswith('_'))


@pytest.fixture(scope='session')
def console_script() -> Path:
    "The installed `colorcourse` command of the running environment."
    exe = Path(sys.executable).parent / 'colorcourse'
    if not exe.exists(): pytest.fail(f"{exe} is missing: install the package first (`pip install -e '.[dev]'`)")
    return exe
