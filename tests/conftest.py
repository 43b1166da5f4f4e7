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


# --- The release as pip sees it: built once per session, shared by the release checks and the Colab smoke runs (tests/test_release.py). ---
import os, shutil, subprocess, venv


def run(cmd, timeout=900, **kwargs) -> subprocess.CompletedProcess:
    "Run `cmd`, failing the test with the tail of its output when it exits non-zero."
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    if r.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def fresh_venv(path: Path) -> Path:
    "A new virtual environment at `path` that sees nothing of this one (no system site-packages); its python."
    venv.create(path, with_pip=True, clear=True)
    return path / 'bin' / 'python'


def outside_env() -> dict:
    "The environment for a process that must see nothing of the checkout: no PYTHONPATH, no virtualenv, no nbdev test flag."
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME', 'IN_TEST')}
    env['PYTHONNOUSERSITE'] = '1'
    return env


@pytest.fixture(scope='session')
def dist(tmp_path_factory) -> dict:
    "`python -m build` of the checkout, as a release does: the sdist, and the wheel built from that sdist."
    out = tmp_path_factory.mktemp('dist')
    run([sys.executable, '-m', 'build', '--outdir', out, ROOT])
    (wheel,) = out.glob('colorcourse-*-py3-none-any.whl')
    (sdist,) = out.glob('colorcourse-*.tar.gz')
    return dict(wheel=wheel, sdist=sdist)


@pytest.fixture(scope='session')
def wheel_venv(dist, tmp_path_factory) -> Path:
    "A fresh virtual environment where pip installed the wheel and its dependencies (from the registry or its cache); its python."
    python = fresh_venv(tmp_path_factory.mktemp('wheel-venv') / 'venv')
    # The notebooks also need a Jupyter kernel: ipykernel, which Colab has and nbclient talks to.
    run([python, '-m', 'pip', 'install', '-q', dist['wheel'], 'ipykernel'], timeout=1800, env=outside_env(), cwd=python.parent)
    yield python
    shutil.rmtree(python.parent.parent, ignore_errors=True)   # several GB (torch): pytest would keep it otherwise


# --- Bad input (tests/test_bad_input*.py): the command run in-process, a refusal's shape, a small model and photo. ---
import io
from contextlib import redirect_stderr, redirect_stdout


def cli(*argv):
    "Run `colorcourse *argv` in this process: (exit code, stdout, stderr)."
    from colorcourse.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(result, *fragments, code=2):
    "A refusal: the exit code, one line on stderr naming the problem, no traceback."
    rc, _, err = result
    lines = err.strip().splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and 'Traceback' not in err, err
    for f in fragments: assert f in lines[0], (f, lines[0])
    return lines[0]


def coffee(size=(96, 64)):
    "scikit-image's coffee photo at `size`, as a PIL image."
    from PIL import Image
    from skimage import data
    return Image.fromarray(data.coffee()).resize(size)


@pytest.fixture(scope='module')
def model():
    "A small pix2pix generator (32 px, width 8) in eval mode, the same weights for every module that asks."
    import torch
    from colorcourse.pix2pix import pix2pix_generator
    torch.manual_seed(0)
    return pix2pix_generator(32, nf=8).eval()


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory, model):
    "`model` saved as a checkpoint file."
    from colorcourse.inference import save_checkpoint
    return save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'g.safetensors', model, size=32)
