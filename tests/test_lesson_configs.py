"Each lesson's settings read from its notebook (tools/lesson_configs.py), and whether each full configuration fits a free Colab runtime."
import importlib.util, json, tracemalloc, warnings

import numpy as np
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location('lesson_configs', ROOT / 'tools' / 'lesson_configs.py')
lc = importlib.util.module_from_spec(spec); spec.loader.exec_module(lc)

TRAINING = lc.training_lessons()


def notebook(tmp_path, *sources) -> 'Path':
    "A notebook of code cells with these sources."
    cells = [dict(cell_type='code', source=s, metadata={}, outputs=[], execution_count=None) for s in sources]
    path = tmp_path / 'nb.ipynb'
    path.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return path


def test_reads_full_smoke_and_shared_settings_without_running_the_cell(tmp_path):
    nb = notebook(tmp_path, "import torch", "%config InlineBackend.figure_formats = ['jpeg']\n"
                  "cfg = course_config(full=dict(dataset='cifar10', size=64, n=100_000, sizes=None),\n"
                  "                    smoke=dict(dataset='sample', size=32, n=8, sizes=[32]), bs=4)\nsource = lesson_source(cfg.dataset)")
    assert lc.lesson_config(nb) == dict(bs=4, dataset='cifar10', size=64, n=100_000, sizes=None)
    assert lc.lesson_config(nb, 'smoke') == dict(bs=4, dataset='sample', size=32, n=8, sizes=[32])


def test_agrees_with_course_config_on_a_real_lesson(monkeypatch):
    from colorcourse.core import course_config
    parts = lc.notebook_config(ROOT / 'nbs' / '08_pix2pix.ipynb')
    monkeypatch.setenv('COLORCOURSE_SMOKE', '0'); monkeypatch.delenv('COLORCOURSE_OVERRIDES', raising=False)
    assert dict(course_config(parts['full'], parts['smoke'], **parts['shared'])) == {**lc.lesson_config(ROOT / 'nbs' / '08_pix2pix.ipynb'), 'run': 'full', 'smoke': False}


def test_bad_notebooks_are_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match=r'nb.ipynb, cell 0: expected dict'):
        lc.notebook_config(notebook(tmp_path, "cfg = course_config(full=settings, smoke=dict(size=32))"))
    with pytest.raises(ValueError, match=r'nb.ipynb has no course_config'):
        lc.lesson_config(notebook(tmp_path, "x = 1"))
    with pytest.raises(ValueError, match=r"which must be one of \['full', 'cpu', 'smoke'\] for 06_unet.ipynb; got 'fast'"):
        lc.lesson_config(ROOT / 'nbs' / '06_unet.ipynb', 'fast')
    with pytest.raises(ValueError, match=r"cell 0: `\*\*` in course_config"):
        lc.notebook_config(notebook(tmp_path, "cfg = course_config(full=dict(size=64), smoke=dict(size=32), **common)"))


def test_a_third_run_size_is_read_as_a_size_not_a_shared_setting(tmp_path):
    nb = notebook(tmp_path, "cfg = course_config(full=dict(size=64), smoke=dict(size=32), cpu=dict(size=48), bs=8)")
    assert lc.notebook_config(nb) == dict(full=dict(size=64), smoke=dict(size=32), cpu=dict(size=48), shared=dict(bs=8))
    assert lc.lesson_config(nb, 'cpu') == dict(bs=8, size=48)


def test_every_training_lesson_is_found_with_its_sizes():
    assert list(TRAINING) == ['04_training', '05_cnn', '06_unet', '07_dcgan', '08_pix2pix', '09_resnet', '10_spectral_norm',
                              '11_evaluation', '12b_hints']   # lesson 12 trains nothing: it uses the shipped colorizer
    for stem, cfg in TRAINING.items():
        assert {'dataset', 'size', 'bs', 'epochs'} <= set(cfg), stem
        assert cfg['dataset'] in lc.DATASET_IMAGES, f"{stem}: how many images has {cfg['dataset']!r}? add it to DATASET_IMAGES"
        assert lc.lesson_config(ROOT / 'nbs' / f'{stem}.ipynb', 'smoke')['dataset'] == 'sample', f"{stem}: smoke runs use the sample photos"


# --- a free Colab runtime ---
COLAB_RAM = 12.7e9   # bytes of RAM of a free Colab runtime (it shows "12.7 GB"; the course says "about 12 GB")
RAM_LIMIT = 10e9     # what a full configuration may use at its peak: a margin below COLAB_RAM for what Colab itself holds
REST = 4e9           # kept for the rest of the process: Python, PyTorch and its CUDA libraries, fastai, the notebook's
                     # own arrays (a lesson process on a CPU peaks near 1.3 GB with a tiny cache; CUDA adds 2 GB or so)


@pytest.fixture(scope='module')
def build_peak_factor() -> float:
    "Peak bytes that building the uint8 cache allocates, per byte of the finished cache (measured with tracemalloc; decoding a chunk at a time keeps it near 1)."
    from PIL import Image
    from colorcourse.data import prepare_images
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            array, _, counts = prepare_images(photos, 64, progress=False, chunk=64)   # a chunk a fifth of the photos, as 4,096 is of a dataset
        peak = tracemalloc.get_traced_memory()[1] - before
    finally: tracemalloc.stop()
    assert counts.used == 300
    assert peak / array.nbytes < 1.5, "the cache must be filled in place, not built twice (a list of squares, then a stack)"
    return peak / array.nbytes


@pytest.mark.parametrize('stem', list(TRAINING))
def test_full_configuration_image_cache_fits_free_colab_ram(stem, build_peak_factor):
    cfg = TRAINING[stem]
    n = lc.DATASET_IMAGES[cfg['dataset']]
    cache = lc.cache_bytes(cfg['size'], n, cfg.get('cache_side'))
    peak = build_peak_factor * cache
    assert peak + REST <= RAM_LIMIT, (f"{stem}: {n:,} {cfg['dataset']} images at {cfg['size']} px make a {cache / 1e9:.2f} GB cache, "
                                      f"{peak / 1e9:.1f} GB while it is built; with {REST / 1e9:.0f} GB for the rest, that exceeds "
                                      f"{RAM_LIMIT / 1e9:.0f} GB (a free Colab has {COLAB_RAM / 1e9} GB)")


def test_cache_bytes_follows_default_cache_side():
    assert lc.cache_bytes(64, 120_000) == 120_000 * 3 * 80 ** 2          # 1.25 × 64: the 2 GiB budget rules out 128 and 256
    assert lc.cache_bytes(32, 60_000) == 60_000 * 3 * 64 ** 2
    assert lc.cache_bytes(64, 100) == 100 * 3 * 256 ** 2
