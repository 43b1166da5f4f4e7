"tools/train_pretrained.py, the one command that retrains the shipped colorizer: both training stages at a tiny size, and the gain's calibration."
import subprocess, sys

import pytest
import torch

from conftest import ROOT
from colorcourse.data import sample_images
from colorcourse.inference import choose_gain, load_colorizer, pretrained, pretrained_path

TOOL = ROOT / 'tools' / 'train_pretrained.py'


def train_pretrained(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    "scikit-image's photos as a folder of JPEG files, the tool's input."
    folder = tmp_path_factory.mktemp('photos')
    for i, img in enumerate(sample_images()): img.convert('RGB').save(folder / f'photo{i}.jpg', quality=95)
    return folder


def test_calibrating_the_shipped_generator_records_the_gain_its_rule_picks(photos, tmp_path):
    out = tmp_path / 'calibrated.safetensors'
    r = train_pretrained('--from-gan', pretrained_path(), '--calibrate-on', photos, '--out', out, '--threads', 1)
    assert r.returncode == 0, r.stderr[-3000:]
    model, shipped = load_colorizer(out), pretrained()
    meta = model.checkpoint['meta']
    rows = meta['calibration_curve']
    import pandas as pd
    curve = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=['ab_l1', 'ab_auc', 'colourfulness'])
    assert type(model).__name__ == 'ChromaGain' and model.gain == meta['gain'] == choose_gain(curve) >= 1
    assert meta['calibration'].startswith(photos.name) and meta['data'] == 'imagenet-sample'   # the training record is kept
    inner, shipped_inner = model.net.state_dict(), shipped.net.state_dict()
    assert all(torch.equal(inner[k], shipped_inner[k]) for k in inner), "calibration leaves the generator's weights alone"
    assert not out.with_name(out.name + '.part').exists()
    r = train_pretrained('--from-gan', pretrained_path(), '--calibrate-on', photos, '--out', out)
    assert r.returncode != 0 and 'exists' in r.stderr, "an existing checkpoint is never overwritten"


def test_both_stages_train_and_record_themselves_at_a_tiny_size(photos, tmp_path):
    out = tmp_path / 'tiny.safetensors'
    r = train_pretrained('--data', photos, '--out', out, '--size', 32, '--nf', 8, '--bs', 4, '--epoch-len', 8,
                         '--l1-epochs', 1, '--gan-epochs', 1, '--threads', 1, '--stage-dir', tmp_path / 'stages')
    assert r.returncode == 0, r.stderr[-3000:]
    model = load_colorizer(out)
    meta = model.checkpoint['meta']
    assert model.checkpoint['size'] == 32 and meta['l1_epochs'] == 1 and meta['gan_epochs'] == 1 and meta['train_minutes'] >= 0
    assert {'hardware', 'colorcourse', 'torch', 'trained', 'recipe'} <= set(meta) and 'gain' not in meta
    assert load_colorizer(tmp_path / 'stages' / 'l1.safetensors').checkpoint['meta']['gan_epochs'] == 0
    with torch.no_grad(): assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_training_without_data_or_calibrating_without_photos_is_refused(tmp_path):
    r = train_pretrained('--out', tmp_path / 'x.safetensors')
    assert r.returncode != 0 and '--data is needed' in r.stderr and not (tmp_path / 'x.safetensors').exists()
    r = train_pretrained('--from-gan', pretrained_path(), '--out', tmp_path / 'x.safetensors')
    assert r.returncode != 0 and 'give --calibrate-on' in r.stderr and not (tmp_path / 'x.safetensors').exists()
