"The package as pip builds it: a wheel that installs in a fresh virtual environment and gives a working command."
import subprocess, sys, venv, zipfile
from email.parser import Parser

import pytest

from conftest import ROOT
import colorcourse


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "A wheel built from the checkout, as `pip install .` builds it."
    out = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(out), str(ROOT)], check=True, timeout=600)
    (whl,) = out.glob('colorcourse-*.whl')
    return whl


def test_wheel_carries_the_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    pkg = {n for n in names if not n.startswith('colorcourse-')}
    assert {'colorcourse/__init__.py', 'colorcourse/core.py', 'colorcourse/cli.py', 'colorcourse/_modidx.py'} <= pkg
    assert all(n.startswith('colorcourse/') and n.endswith('.py') for n in pkg), sorted(pkg)


def test_wheel_metadata_leaves_torch_to_fastai(wheel):
    zf = zipfile.ZipFile(wheel)
    meta = Parser().parsestr(zf.read(next(n for n in zf.namelist() if n.endswith('METADATA'))).decode())
    assert meta['Version'] == colorcourse.__version__ and meta['License-Expression'] == 'Apache-2.0'
    reqs = [r for r in meta.get_all('Requires-Dist') if 'extra ==' not in r]
    assert any(r.startswith('fastai') for r in reqs)
    assert not any(r.split('>')[0].split('=')[0].split('<')[0].strip() in ('torch', 'torchvision') for r in reqs), reqs
    entry_points = zf.read(next(n for n in zf.namelist() if n.endswith('entry_points.txt'))).decode()
    assert 'colorcourse = colorcourse.cli:main' in entry_points


def test_fresh_venv_gets_a_working_command(wheel, tmp_path):
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    # --no-deps: `--version` needs nothing beyond the package; the dependencies are checked in the metadata test.
    subprocess.run([str(env_dir / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)], check=True, timeout=600)
    r = subprocess.run([str(env_dir / 'bin' / 'colorcourse'), '--version'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f'colorcourse {colorcourse.__version__}', r.stderr
