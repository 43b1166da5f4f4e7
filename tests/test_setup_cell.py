"""The setup cell that opens every notebook, run as Colab would run it before the first release: offline, against a
local package index that has no colorcourse and a local git repository standing in for GitHub (issue 30)."""
import importlib.util, json, os, shutil, subprocess, sys, venv
from pathlib import Path

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location('lessons_tool', ROOT / 'tools' / 'lessons.py')
LESSONS = importlib.util.module_from_spec(spec); spec.loader.exec_module(LESSONS)
GITHUB = 'https://github.com/colorcourse/colorcourse'


def as_colab_script(cell: str) -> str:
    "The setup cell as a plain Python script that believes it runs in Colab (the IPython magic dropped)."
    body = '\n'.join(l for l in cell.splitlines() if not l.startswith('%'))
    return "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n" + body


def share_packages_but_colorcourse(env_dir: Path) -> Path:
    "Let the venv `env_dir` see this environment's packages (fastai, torch, setuptools...), but not colorcourse itself."
    farm = env_dir / 'shared-packages'; farm.mkdir()
    site = next(Path(p) for p in sys.path if p.endswith('site-packages') and Path(p).is_dir())
    for entry in site.iterdir():
        if entry.name.lower().startswith(('colorcourse', '__editable__')) or entry.suffix == '.pth': continue
        (farm / entry.name).symlink_to(entry)
    env_site = next((env_dir / 'lib').glob('python3*/site-packages'))
    for old in [*env_site.glob('setuptools*'), *env_site.glob('_distutils_hack'), *env_site.glob('distutils-precedence.pth')]:
        shutil.rmtree(old) if old.is_dir() else old.unlink()   # the venv's own older setuptools: the shared one builds the package
    (env_site / 'shared-packages.pth').write_text(str(farm) + '\n')
    return farm


def offline_pip_env(index: Path, repo: Path) -> dict:
    "An environment where pip sees only the local `index` and git fetches GitHub's address from the local `repo`."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PIP_', 'GIT_', 'VIRTUAL_ENV'))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index.as_uri(), PIP_NO_BUILD_ISOLATION='0', PIP_DISABLE_PIP_VERSION_CHECK='1',
               PIP_NO_CACHE_DIR='1', GIT_TERMINAL_PROMPT='0', GIT_CONFIG_COUNT='1',
               GIT_CONFIG_KEY_0=f'url.{repo.as_uri()}.insteadOf', GIT_CONFIG_VALUE_0=GITHUB)
    return env


@pytest.fixture(scope='module')
def colab_like(tmp_path_factory):
    "A fresh venv (the course's dependencies shared, colorcourse absent), an empty local index, and the offline environment."
    if not (ROOT / '.git').exists(): pytest.skip('needs the repository as a git checkout')
    tmp = tmp_path_factory.mktemp('colab')
    venv.create(tmp / 'env', with_pip=True)
    share_packages_but_colorcourse(tmp / 'env')
    (tmp / 'index').mkdir()
    return tmp / 'env' / 'bin' / 'python', offline_pip_env(tmp / 'index', ROOT)


def run_cell(python: Path, env: dict, cell: str, tmp: Path) -> subprocess.CompletedProcess:
    "Run `cell` as Colab's first cell with `python`."
    script = tmp / 'setup_cell.py'; script.write_text(as_colab_script(cell))
    return subprocess.run([str(python), str(script)], env=env, cwd=tmp, capture_output=True, text=True, timeout=600)


def installed(python: Path, env: dict, tmp: Path) -> bool:
    "Whether colorcourse is installed in the venv of `python`."
    probe = 'import importlib.metadata as m; m.version("colorcourse")'
    return subprocess.run([str(python), '-c', probe], env=env, cwd=tmp, capture_output=True).returncode == 0


def test_a_plain_index_install_fails_offline_as_colab_did(colab_like, tmp_path):
    "The check the new cell passes is a real one: the cell every lesson had before stops at its first line here."
    python, env = colab_like
    assert not installed(python, env, tmp_path), "runs before the test that installs colorcourse"
    old = ("import sys, subprocess\nif 'google.colab' in sys.modules:\n"
           "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'colorcourse'], check=True)")
    r = run_cell(python, env, old, tmp_path)
    assert r.returncode != 0 and 'CalledProcessError' in r.stderr


def test_setup_cell_installs_from_github_when_the_index_lacks_colorcourse(colab_like, tmp_path):
    python, env = colab_like
    assert not installed(python, env, tmp_path), "the test venv must start without colorcourse"
    r = run_cell(python, env, LESSONS.SETUP_CELL, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith('GPU:'), r.stdout
    probe = ("import importlib.metadata as m, json; d = m.distribution('colorcourse'); "
             "print(json.dumps(dict(version=d.version, url=json.loads(d.read_text('direct_url.json'))['url'])))")
    info = json.loads(subprocess.run([str(python), '-c', probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout)
    assert info['version'] == LESSONS.course_version()
    assert info['url'] == GITHUB, info      # from the git repository (GitHub's address; git fetched the local one)


def test_setup_cell_names_the_packages_version():
    assert f"'{LESSONS.course_version()}'" in LESSONS.SETUP_CELL and '@VERSION@' not in LESSONS.SETUP_CELL
