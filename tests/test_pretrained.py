"The colorizer shipped inside the package: it loads, its metadata says how it was made, and it colorizes photos it never saw better than gray."
import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from colorcourse.data import SAMPLE_NAMES, _fit_square, sample_images
from colorcourse.inference import colorize, predict_ab, pretrained, pretrained_path, read_checkpoint_info
from colorcourse.unet import period2_energy
from colorcourse.lab import AB_SCALE, lab_encode, rgb_to_lab

NATURAL = ('astronaut', 'chelsea', 'coffee', 'rocket', 'motorcycle')   # the sample photos of everyday scenes (not micrographs)


def lab_of(img: Image.Image) -> torch.Tensor:
    "CIE Lab (3,H,W) of an RGB PIL image."
    return rgb_to_lab(torch.from_numpy(np.asarray(img.convert('RGB'))).permute(2, 0, 1).float() / 255)


def test_the_weights_load_and_match_their_metadata():
    info, model = read_checkpoint_info(pretrained_path()), pretrained()
    assert info['arch'] == 'ChromaGain' and info['size'] == 64
    net = info['args']['net']
    assert net['arch'] == 'UnetGenerator' and net['args']['up'] == 'resize', "the decoder resizes: no checkerboard"
    meta = info['meta']
    for key in ('recipe', 'protocol', 'data', 'train', 'epoch', 'train_minutes', 'hardware', 'mean_colour', 'torch', 'colorcourse',
                'trained', 'gain', 'gain_rule', 'calibration_curve', 'baselines', 'render_size', 'render_size_curve', 'selection'):
        assert key in meta, f"the checkpoint's metadata lacks {key}"
    assert model.gain == info['args']['gain'] == meta['gain'] >= 1, "the gain the model applies is the one its metadata records"
    assert meta['gain'] in [g for g, *_ in meta['calibration_curve']] and 'bsds500' in meta['selection'].lower()
    assert meta['data']['train'] > 90_000 and meta['train_minutes'] > 0 and 'BSDS500' in meta['protocol']
    assert str(meta['render_size']) in {str(k) for k in meta['render_size_curve']}
    assert meta['epoch'] in {int(k) for k in meta['bsds_ab_l1_by_epoch']}
    with safe_open(str(pretrained_path()), 'pt') as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    state = model.state_dict()
    assert set(stored) == set(state) and all(stored[k].shape == state[k].shape for k in state)
    assert {v.dtype for k, v in stored.items() if 'num_batches' not in k} == {torch.float16}, "weights are stored as fp16"
    assert all(torch.equal(state[k].float(), stored[k].float()) for k in state), "the model holds exactly the stored weights"
    assert not model.training and all(torch.isfinite(v.float()).all() for v in state.values())
    assert pretrained_path().stat().st_size < 12 * 2**20


def test_the_shipped_colorizer_paints_no_grid():
    "The period-2 energy (stripes, checkerboards) of its ab, on natural photos and on flat grays, stays below the photos' own."
    photos = dict(zip(SAMPLE_NAMES, sample_images()))
    squares = [_fit_square(photos[n], 64) for n in NATURAL]   # lesson 02's centre squares
    L, true_ab = lab_encode(torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in squares]).float() / 255)
    flat = torch.linspace(-0.8, 0.8, 9).view(-1, 1, 1, 1).expand(-1, 1, 64, 64)
    own = period2_energy(true_ab).median()
    assert period2_energy(predict_ab(pretrained(), L)).max() < own, "more period-2 pattern than the photos' own"
    assert period2_energy(predict_ab(pretrained(), flat)).max() < own, "a period-2 pattern on flat gray"



def test_the_shipped_colorizer_beats_gray_on_photos_it_never_saw():
    "scikit-image's photos are not in its training data (ImageNet photos): per photo, ab L1 of its colours against gray's."
    photos = dict(zip(SAMPLE_NAMES, sample_images()))
    model_err, gray_err = [], []
    for name in NATURAL:
        photo = photos[name]
        true_ab = lab_of(photo)[1:] / AB_SCALE
        pred_ab = lab_of(colorize(photo.convert('L'), model=None))[1:] / AB_SCALE
        model_err.append((pred_ab - true_ab).abs().mean().item()); gray_err.append(true_ab.abs().mean().item())
    assert sum(m < g for m, g in zip(model_err, gray_err)) >= 4, (model_err, gray_err)   # one may go to gray (the rocket's dark launch scene does)


def test_colorize_without_a_model_keeps_the_photos_size_and_lightness():
    photo = sample_images()[1].resize((301, 200))
    out = colorize(photo.convert('L'))
    assert out.size == photo.size and out.mode == 'RGB'
    L_in, lab_out = lab_of(photo.convert('L')), lab_of(out)
    assert (lab_out[0] - L_in[0]).abs().mean() < 1.0
    assert lab_out[1:].abs().mean() > 1.0, "the output has colour"
