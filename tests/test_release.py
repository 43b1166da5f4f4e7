"The release as `python -m build` makes it: an sdist and a wheel that install in fresh environments and carry the right metadata."
import ast, json, os, re, shutil, tarfile, zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

import pytest

from conftest import NBS, ROOT, fresh_venv, outside_env, read_json, run

# What a release may never carry: notebooks, checkpoints, data, the docs build. The one exception is the package's own assets.
FORBIDDEN = re.compile(r'(\.ipynb|\.pth|\.pt|\.safetensors|\.ckpt|\.jpe?g|\.png|\.npz?|\.zip|\.tar(\.gz)?)$|(^|/)(nbs|_proc|_docs|models|data)/')
ASSETS = {'colorcourse/assets/colorizer.safetensors', 'colorcourse/assets/hints.safetensors',
          'colorcourse/assets/imagenet_sample.txt'}   # the shipped colorizer, lesson 12b's hint model, the photo list


def source_version() -> str:
    "`__version__` as colorcourse/__init__.py states it (the one place the version lives: see CONTRIBUTING.md)."
    tree = ast.parse((ROOT / 'colorcourse' / '__init__.py').read_text())
    return next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == '__version__')


def wheel_metadata(wheel):
    zf = zipfile.ZipFile(wheel)
    return Parser().parsestr(zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))).decode())


def test_build_gives_a_wheel_and_an_sdist_of_the_source_version(dist):
    v = source_version()
    assert dist['wheel'].name == f'colorcourse-{v}-py3-none-any.whl'
    assert dist['sdist'].name == f'colorcourse-{v}.tar.gz'


def test_wheel_holds_only_the_package(dist):
    names = zipfile.ZipFile(dist['wheel']).namelist()
    pkg = sorted(n for n in names if '.dist-info/' not in n)
    assert {f'colorcourse/{p.name}' for p in (ROOT / 'colorcourse').glob('*.py')} | ASSETS == set(pkg), \
        "the wheel must hold exactly colorcourse/*.py and the assets (notebooks, data and other checkpoints stay out)"
    assert not [n for n in names if FORBIDDEN.search(n) and n not in ASSETS]
    assert dist['wheel'].stat().st_size < 25e6, "the wheel must stay under 25 MB"   # two shipped models: the colorizer and the hint model


def test_sdist_holds_the_sources_and_no_notebooks_data_or_checkpoints(dist):
    with tarfile.open(dist['sdist']) as tf:
        names = [str(PurePosixPath(*PurePosixPath(n).parts[1:])) for n in tf.getnames()]
    for needed in ('pyproject.toml', 'README.md', 'PKG-INFO', 'colorcourse/__init__.py', 'colorcourse/_modidx.py', 'colorcourse/cli.py', *ASSETS):
        assert needed in names, f"the sdist lacks {needed}"
    assert not [n for n in names if FORBIDDEN.search(n) and n not in ASSETS], [n for n in names if FORBIDDEN.search(n)]


def test_metadata_matches_pyproject(dist, pyproject):
    proj, meta = pyproject['project'], wheel_metadata(dist['wheel'])
    assert meta['Name'] == proj['name'] and meta['Version'] == source_version()
    assert meta['Summary'] == proj['description']
    assert meta['License-Expression'] == proj['license']
    assert meta['Requires-Python'] == proj['requires-python']
    assert meta['Description-Content-Type'] == 'text/markdown'
    assert meta.get_payload().strip() == (ROOT / 'README.md').read_text().strip(), "the long description must be README.md"
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert urls == proj['urls']
    assert set(meta.get_all('Classifier')) == set(proj['classifiers'])
    reqs = [r for r in meta.get_all('Requires-Dist') if 'extra ==' not in r]
    assert sorted(r.replace(' ', '') for r in reqs) == sorted(r.replace(' ', '') for r in proj['dependencies'])
    docs = proj['urls']['Documentation'].rstrip('/')
    assert (ROOT / 'nbs' / 'nbdev.yml').read_text().count(docs) == 1, "nbs/nbdev.yml's site-url must be the Documentation URL"
    zf = zipfile.ZipFile(dist['wheel'])
    entry_points = zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/entry_points.txt'))).decode()
    assert all(f'{name} = {target}' in entry_points for name, target in proj['scripts'].items()), entry_points


def test_sdist_metadata_is_the_wheels(dist):
    with tarfile.open(dist['sdist']) as tf:
        pkg_info = tf.extractfile(next(m for m in tf.getmembers() if m.name.count('/') == 1 and m.name.endswith('/PKG-INFO'))).read().decode()
    sdist_meta, wheel_meta = Parser().parsestr(pkg_info), wheel_metadata(dist['wheel'])
    for key in ('Name', 'Version', 'Summary', 'License-Expression', 'Requires-Python'):
        assert sdist_meta[key] == wheel_meta[key], key


def check_installed(python, tmp_path):
    "`import colorcourse` and `colorcourse --version` in the environment of `python`, run from a folder outside the checkout."
    cwd = tmp_path / 'elsewhere'; cwd.mkdir()
    r = run([python, '-c', 'import colorcourse, sys; print(colorcourse.__version__); print(colorcourse.__file__)'], cwd=cwd, env=outside_env())
    version, where = r.stdout.split()
    assert version == source_version()
    assert where.startswith(str(python.parent.parent)) and not where.startswith(str(ROOT)), f"imported from {where}"
    r = run([python.parent / 'colorcourse', '--version'], cwd=cwd, env=outside_env())
    assert r.stdout.strip() == f'colorcourse {source_version()}'


@pytest.mark.slow
def test_wheel_installs_with_its_dependencies_in_a_fresh_venv(wheel_venv, tmp_path):
    check_installed(wheel_venv, tmp_path)
    # `info` imports torch and fastai: the declared dependencies are enough to run the package.
    r = run([wheel_venv.parent / 'colorcourse', 'info'], cwd=tmp_path / 'elsewhere', env=outside_env())
    assert 'torch' in r.stdout and 'fastai' in r.stdout
    r = run([wheel_venv, '-c', 'import colorcourse.data, colorcourse.training, colorcourse.gan; print(len(colorcourse.data.sample_images()))'],
            cwd=tmp_path / 'elsewhere', env=outside_env())
    assert int(r.stdout) > 0
    # the shipped colorizer, offline, with no checkpoint given: the photo keeps its size
    from PIL import Image
    from skimage import data as skdata
    Image.fromarray(skdata.chelsea()).convert('L').save(tmp_path / 'elsewhere' / 'cat.jpg')
    r = run([wheel_venv.parent / 'colorcourse', 'colorize', 'cat.jpg', '-o', 'out'], cwd=tmp_path / 'elsewhere', env=outside_env())
    assert 'with the shipped colorizer' in r.stdout
    assert Image.open(tmp_path / 'elsewhere' / 'out' / 'cat_color.jpg').size == Image.open(tmp_path / 'elsewhere' / 'cat.jpg').size


@pytest.mark.slow
def test_sdist_installs_in_a_fresh_venv(dist, wheel_venv, tmp_path):
    python = fresh_venv(tmp_path / 'venv')
    # pip builds the package from the sdist (setuptools from the registry). The dependencies (torch: GBs) are not
    # downloaded twice: a .pth file appends the wheel venv's site-packages, after this venv's own, whose colorcourse wins.
    run([python, '-m', 'pip', 'install', '-q', '--no-deps', dist['sdist']], env=outside_env(), cwd=tmp_path)
    site = lambda py: run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], env=outside_env()).stdout.strip()
    (Path(site(python)) / 'zz_dependencies.pth').write_text(site(wheel_venv) + '\n')
    check_installed(python, tmp_path)



# --- Colab: each lesson runs top to bottom where only the released package is installed ---
LESSONS = sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))
WHERE = "import colorcourse, sys; print('colorcourse from', colorcourse.__file__)"


def in_progress(name: str) -> bool:
    "A notebook not yet in nbs/sidebar.yml is a lesson being written (test_course checks that every lesson gets there)."
    return name not in (NBS / 'sidebar.yml').read_text()


@pytest.fixture(scope='session')
def kernel_dirs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('kernels')


def fresh_kernel(python: Path, kernel_dirs: Path, name: str, **env) -> str:
    "A Jupyter kernel spec that runs the fresh venv's `python` in smoke mode with `env`; its name."
    (kernel_dirs / name).mkdir(exist_ok=True)
    spec = dict(argv=[str(python), '-m', 'ipykernel_launcher', '-f', '{connection_file}'], display_name=name, language='python',
                env=dict(COLORCOURSE_SMOKE='1', PYTHONNOUSERSITE='1', **env))
    (kernel_dirs / name / 'kernel.json').write_text(json.dumps(spec))
    return name


def execute(nb, kernel_dirs: Path, kernel: str, workdir: Path):
    "Run notebook `nb` top to bottom with nbclient on `kernel`, in `workdir` (outside the checkout); the executed notebook."
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    workdir.mkdir(parents=True, exist_ok=True)
    km = KernelManager(kernel_name=kernel, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dirs)]))
    client = NotebookClient(nb, km=km, kernel_name=kernel, timeout=600, resources={'metadata': {'path': str(workdir)}})
    client.execute(cwd=str(workdir))
    return nb


def output_text(cell) -> str:
    return ''.join(o.get('text', '') + ''.join(o.get('data', {}).get('text/plain', '')) for o in cell.get('outputs', []))


@pytest.mark.slow
def test_colab_setup_cell_installs_colorcourse_only(wheel_venv, dist, kernel_dirs, tmp_path):
    "The setup cell's Colab branch, with a fake `google.colab`, pip reaching only the built wheel: it installs colorcourse and nothing else."
    import nbformat
    freeze = lambda: {(p['name'].lower(), p['version']) for p in json.loads(run([wheel_venv, '-m', 'pip', 'list', '--format=json'], env=outside_env()).stdout)}
    run([wheel_venv, '-m', 'pip', 'uninstall', '-y', '-q', 'colorcourse'], env=outside_env())
    before = freeze()
    kernel = fresh_kernel(wheel_venv, kernel_dirs, 'fake-colab', PIP_NO_INDEX='1', PIP_FIND_LINKS=str(dist['wheel'].parent),
                          PIP_CONFIG_FILE=os.devnull)
    setup = read_json(NBS / LESSONS[0])['cells'][0]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')  # what Colab has"),
        nbformat.v4.new_code_cell(''.join(setup['source'])), nbformat.v4.new_code_cell(WHERE)])
    try:
        execute(nb, kernel_dirs, kernel, tmp_path / 'colab')
        after = freeze()
    finally:  # leave the shared venv as it was, whatever happened
        run([wheel_venv, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', '--force-reinstall', dist['wheel']], env=outside_env())
    assert after - before == {('colorcourse', source_version())} and before <= after, f'the Colab branch installed {sorted(after - before)}'
    assert str(wheel_venv.parent.parent) in output_text(nb.cells[-1])


def lesson_params():
    return [pytest.param(n, marks=pytest.mark.skip(reason=f'{n} is not in nbs/sidebar.yml yet (a lesson in progress)')) if in_progress(n) else n
            for n in LESSONS]


@pytest.mark.slow
@pytest.mark.parametrize('name', lesson_params())
def test_notebook_runs_in_smoke_mode_from_the_released_package(wheel_venv, kernel_dirs, name, tmp_path):
    "Colab, as near as a test gets: a copy of the notebook alone in a folder, a fresh venv with only the wheel and its dependencies, smoke mode."
    import nbformat
    kernel = fresh_kernel(wheel_venv, kernel_dirs, 'fresh')
    work = tmp_path / 'colab'; work.mkdir()
    shutil.copy2(NBS / name, work / name)
    nb = nbformat.read(work / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    execute(nb, kernel_dirs, kernel, work)
    where = output_text(nb.cells[-1])
    assert str(wheel_venv.parent.parent) in where and str(ROOT) not in where, where
