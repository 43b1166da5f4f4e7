"""Lesson 09's encoder pretraining: class labels from Tiny ImageNet's layout, loaders of (L, class), a classifier that
learns, a run that resumes after an interruption exactly where an uninterrupted one would be, and the encoder in the U-Net."""
import numpy as np
import pytest
import torch
from PIL import Image

import colorcourse.resnet as resnet
from colorcourse.data import colorization_dls
from colorcourse.resnet import (classification_dls, image_class, pretrain_encoder, read_checkpoint_info, resnet_classifier,
                                resnet_unet, top1_accuracy)


def stripes(path, vertical: bool, rng):
    "A 48-px photo of coloured stripes, vertical or horizontal, with random colours, period and phase."
    period, phase = rng.integers(6, 12), rng.integers(0, 12)
    on = ((np.arange(48) + phase) // (period // 2)) % 2 == 0
    mask = np.broadcast_to(on[None, :] if vertical else on[:, None], (48, 48))
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.where(mask[..., None], a, b).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope='module')
def stripe_dls(tmp_path_factory):
    "Cached DataLoaders of 96 stripe photos, in the folders `vertical/` and `horizontal/` (their classes)."
    root, rng = tmp_path_factory.mktemp('stripes'), np.random.default_rng(0)
    for i in range(96): stripes(root / ('vertical' if i % 2 else 'horizontal') / f'{i}.png', bool(i % 2), rng)
    return colorization_dls(root, size=32, bs=16, valid_pct=0.25, cache='memory', scale=(0.5, 1.), device='cpu', progress=False)


def test_image_class_reads_tiny_imagenet_and_folders(tmp_path):
    (tmp_path / 'val/images').mkdir(parents=True)
    (tmp_path / 'val/val_annotations.txt').write_text('val_7.JPEG\tn01443537\t0\t0\t63\t63\n\n')
    (tmp_path / 'val/images/val_7.JPEG').touch()
    assert image_class(tmp_path / 'val/images/val_7.JPEG') == 'n01443537'
    assert image_class(tmp_path / 'train/n02085620/images/n02085620_1.JPEG') == 'n02085620'
    assert image_class(tmp_path / 'imagenette/train/n03028079/x.JPEG') == 'n03028079'


def test_classification_loaders_pair_each_crop_with_its_class(stripe_dls):
    cls = classification_dls(stripe_dls, bs=8)
    assert cls.classes == ['horizontal', 'vertical']
    names, labels = cls.train.dataset.names, cls.train.labels
    assert [cls.classes[i] for i in labels] == [image_class(n) for n in names]
    x, y = cls.one_batch()
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.long and x.min() >= -1 and x.max() <= 1
    assert cls.train.n == len(stripe_dls.train.dataset)              # an epoch: every training photo once
    with pytest.raises(ValueError, match='not in the vocabulary'): classification_dls(stripe_dls, classes=['vertical'])


def test_classification_loaders_need_a_cache():
    dls = colorization_dls('sample', size=32, bs=2, valid_pct=0.25, cache=None, device='cpu')
    with pytest.raises(TypeError, match="cache='memory'"): classification_dls(dls)


def test_pretraining_learns_the_classes(stripe_dls, tmp_path):
    cls = classification_dls(stripe_dls, bs=16, epoch_len=256)
    torch.manual_seed(0)
    model = pretrain_encoder(cls, tmp_path / 'enc.safetensors', epochs=4, lr=2e-3, fast=False)
    assert top1_accuracy(model, cls.valid) >= 0.75                # 18 of 24; chance is 0.5: the orientation is in the lightness alone
    log = read_checkpoint_info(tmp_path / 'enc.safetensors')['meta']['log']
    assert [r['epoch'] for r in log] == [0, 1, 2, 3] and log[-1]['train_loss'] < log[0]['train_loss']


def test_an_interrupted_pretraining_resumes_where_it_stopped(stripe_dls, tmp_path, monkeypatch, capsys):
    cls = classification_dls(stripe_dls, bs=16, epoch_len=64)
    whole = pretrain_encoder(cls, tmp_path / 'whole.safetensors', epochs=2, lr=1e-3, fast=False)
    original = resnet.EpochCheckpoint.after_epoch
    def stop_after_first(self):
        original(self)
        raise KeyboardInterrupt
    monkeypatch.setattr(resnet.EpochCheckpoint, 'after_epoch', stop_after_first)
    with pytest.raises(KeyboardInterrupt): pretrain_encoder(cls, tmp_path / 'cut.safetensors', epochs=2, lr=1e-3, fast=False)
    assert not (tmp_path / 'cut.safetensors').exists() and (tmp_path / 'cut.safetensors.partial').exists()
    monkeypatch.setattr(resnet.EpochCheckpoint, 'after_epoch', original)
    with pytest.raises(ValueError, match='other settings'):          # a partial run is only resumed with its own settings
        pretrain_encoder(cls, tmp_path / 'cut.safetensors', epochs=3, lr=1e-3, fast=False)
    resumed = pretrain_encoder(cls, tmp_path / 'cut.safetensors', epochs=2, lr=1e-3, fast=False)
    assert 'resuming after epoch 1 of 2' in capsys.readouterr().out
    assert not (tmp_path / 'cut.safetensors.partial').exists()
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f'{k} differs from the uninterrupted run')


def test_the_unet_starts_from_the_pretrained_encoder(stripe_dls, tmp_path):
    cls = classification_dls(stripe_dls, bs=16, epoch_len=16)
    clf = pretrain_encoder(cls, tmp_path / 'enc.safetensors', epochs=1, fast=False)
    net = resnet_unet('resnet18', pretrained=tmp_path / 'enc.safetensors', size=32)
    encoder = dict(net[0].named_parameters())
    for name, p in clf.named_parameters():
        if not name.startswith('fc.'):
            torch.testing.assert_close(encoder[{'conv1': '0', 'bn1': '1', 'layer1': '4', 'layer2': '5', 'layer3': '6',
                                                'layer4': '7'}[name.split('.')[0]] + name[name.index('.'):]], p)
    with pytest.raises(ValueError, match='not a resnet34'): resnet_unet('resnet34', pretrained=tmp_path / 'enc.safetensors', size=32)
    with pytest.raises(FileNotFoundError): resnet_unet('resnet18', pretrained=tmp_path / 'missing.safetensors', size=32)
    assert resnet_classifier('resnet18', 3)(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_a_unet_on_a_pretrained_encoder_saves_and_loads(stripe_dls, tmp_path):
    from colorcourse.training import load_checkpoint, save_checkpoint
    cls = classification_dls(stripe_dls, bs=16, epoch_len=16)
    pretrain_encoder(cls, tmp_path / 'enc.safetensors', epochs=1, fast=False)
    net = resnet_unet('resnet18', pretrained=tmp_path / 'enc.safetensors', size=32).eval()
    path = save_checkpoint(tmp_path / 'unet.safetensors', net, size=32)
    (tmp_path / 'enc.safetensors').unlink()                     # the checkpoint holds every weight: the encoder file is not needed
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(load_checkpoint(path).eval()(x), net(x))
