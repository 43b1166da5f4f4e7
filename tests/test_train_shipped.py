"tools/train_shipped.py, the two commands that retrain the shipped colorizer: a checkpoint every epoch, resuming, refusals, and selection on other photos."
import importlib.util, json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'train_shipped.py'
SMALL = ('--epoch-len', 16, '--bs', 8, '--nf', 8, '--threads', 1)   # a tiny run: two steps an epoch


def tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=900)


def colour_photos(folder: Path, n: int, ext: str = '.jpg', seed: int = 0):
    "`n` colourful 72-px photos (a gradient between two random colours) in `folder`."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 72)[:, None, None]
    for i in range(n):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        Image.fromarray((a * t + b * (1 - t)).repeat(72, 1).astype(np.uint8)).save(folder / f'photo{i:03d}{ext}', quality=95)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('shipped')
    colour_photos(root / 'tiny-imagenet-200' / 'train' / 'n00000001' / 'images', 40, '.JPEG', seed=1)
    colour_photos(root / 'imagenet-sample', 20, seed=2)
    colour_photos(root / 'bsds500', 6, seed=3)
    return root


@pytest.fixture(scope='module')
def trained(data):
    work = data / 'run'
    r = tool('train', '--tiny', data / 'tiny-imagenet-200', '--sample', data / 'imagenet-sample', '--work', work, '--epochs', 2, *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    return work, r


def test_train_keeps_a_checkpoint_and_the_state_after_every_epoch(trained):
    work, r = trained
    state = json.loads((work / 'state.json').read_text())
    assert state['epochs_done'] == 2 and [h['epoch'] for h in state['history']] == [1, 2]
    assert sorted(p.name for p in work.glob('epoch*.safetensors')) == ['epoch01.safetensors', 'epoch02.safetensors']
    assert state['data']['train'] + state['data']['watch'] == state['data']['usable'] == 40 + 18   # the sample's 10% stays out
    assert len(state['mean_colour']) == 2 and 'no GPU' in state['hardware']
    assert 'epoch 1/2' in r.stdout and 'epoch 2/2' in r.stdout


def test_train_resumes_after_an_interruption_and_refuses_to_mix_runs(trained, data):
    work, _ = trained
    state = json.loads((work / 'state.json').read_text())
    (work / 'epoch02.safetensors').unlink()
    (work / 'state.json').write_text(json.dumps(dict(state, epochs_done=1, history=state['history'][:1])))   # as if stopped after epoch 1
    args = ('train', '--tiny', data / 'tiny-imagenet-200', '--sample', data / 'imagenet-sample', '--work', work, '--epochs', 2)
    r = tool(*args, *SMALL)
    assert r.returncode != 0 and 'pass --resume' in r.stderr
    r = tool(*args, *SMALL, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resuming after epoch 1' in r.stdout and 'epoch 1/2' not in r.stdout and 'epoch 2/2' in r.stdout
    assert (work / 'epoch02.safetensors').exists() and json.loads((work / 'state.json').read_text())['epochs_done'] == 2
    r = tool(*args, '--epoch-len', 16, '--bs', 8, '--nf', 16, '--threads', 1, '--resume')
    assert r.returncode != 0 and 'another recipe' in r.stderr


def test_select_chooses_on_other_photos_and_writes_the_shipped_checkpoint(trained, data):
    "The epoch, the gain (lesson 12's `choose_gain` against both baselines) and the render size, all recorded in an fp16 checkpoint."
    from safetensors import safe_open
    from colorcourse.inference import choose_gain, load_colorizer, read_checkpoint_info
    import pandas as pd, torch
    work, _ = trained
    out = data / 'colorizer.safetensors'
    r = tool('select', '--work', work, '--select-on', data / 'bsds500', '--out', out, '--threads', 1)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = read_checkpoint_info(out)['meta']
    assert meta['epoch'] in (1, 2) and set(meta['bsds_ab_l1_by_epoch']) == {'1', '2'}
    assert meta['epoch'] == int(min(meta['bsds_ab_l1_by_epoch'], key=meta['bsds_ab_l1_by_epoch'].get))
    curve = pd.DataFrame([r[1:] for r in meta['calibration_curve']], index=[r[0] for r in meta['calibration_curve']],
                         columns=['ab_l1', 'ab_auc', 'colourfulness'])
    assert meta['gain'] == choose_gain(curve, baselines=meta['baselines']) and set(meta['baselines']) == {'gray', 'mean colour'}
    assert str(meta['render_size']) in meta['render_size_curve'] and 'BSDS500' in meta['protocol']
    model = load_colorizer(out)
    assert type(model).__name__ == 'ChromaGain' and model.gain == meta['gain']
    with safe_open(str(out), 'pt') as f: assert {f.get_tensor(k).dtype for k in f.keys() if 'num_batches' not in k} == {torch.float16}
    r = tool('select', '--work', work, '--select-on', data / 'bsds500', '--out', out)
    assert r.returncode != 0 and 'exists' in r.stderr, "select never replaces a file"


def test_the_render_size_curve_scores_full_resolution_photos(trained, data):
    spec = importlib.util.spec_from_file_location('train_shipped', TOOL)
    ts = importlib.util.module_from_spec(spec); spec.loader.exec_module(ts)
    from colorcourse.inference import load_colorizer
    model = load_colorizer(trained[0] / 'epoch01.safetensors')
    curve = ts.render_size_curve(model, sorted((data / 'bsds500').glob('*.jpg'))[:2], sizes=(64, 128))
    assert set(curve) == {64, 128} and all(0 < v['ab_l1'] < 1 and v['seconds'] > 0 for v in curve.values())
