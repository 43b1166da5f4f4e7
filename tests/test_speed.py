"Lesson 13's benchmark and fast path on the CPU: the JSON of `colorcourse bench`, autocast, loss scaling in the GAN step, FLOP counts."
import argparse, json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from colorcourse.gan import gan_step
from colorcourse.speed import (autocast, bench_command, bench_options, counted_flops, forward_flops,
                               grad_scaler, l1_step, pix2pix_pair, run_bench, train_speed)

TINY = dict(sizes=[32], models=['pix2pix', 'cnn', 'resnet'], bs=2, steps=1, nf=8, quick=True, compile=False)


@pytest.fixture(scope='module')
def bench():
    return run_bench(**TINY, device='cpu')


def test_bench_json_keys_and_types(bench):
    assert json.loads(json.dumps(bench)) == bench
    assert bench['device_type'] == 'cpu' and bench['device'].startswith('cpu') and bench['gpu'] is None
    assert {'train', 'layouts', 'pipeline', 'lab', 'end_to_end', 'summary', 'settings', 'torch'} <= set(bench)
    assert len(bench['train']) == 3 * 4                       # 3 models x (fp32, bf16) x (channels_last off, on)
    for r in bench['train']:
        assert r['precision'] in ('fp32', 'bf16') and isinstance(r['channels_last'], bool)
        assert r['img_s'] > 0 and r['gflop_per_img'] > 0 and r['peak_fraction'] is None   # no peak guessed on a CPU
    assert {(r['precision'], r['channels_last']) for r in bench['train']} == {(p, c) for p in ('fp32', 'bf16') for c in (False, True)}
    assert bench['pipeline']['cached_img_s'] > 0 and bench['pipeline']['uncached_img_s'] > 0
    assert bench['lab']['cpu_pix_s'] > 0 and bench['lab']['skimage_pix_s'] > 0
    assert bench['end_to_end']['usual_img_s'] > 0 and bench['end_to_end']['fast_img_s'] > 0
    assert bench['summary']['32']['best_img_s'] > 0
    assert set(bench['goals']) == {'pix2pix_256_img_s', 'pix2pix_64_img_s', 'pipeline_headroom', 'end_to_end_speedup'}
    assert {g['met'] for g in bench['goals'].values()} == {None}      # goals are judged on an H100/H200 only


def test_bench_command_prints_json(capsys):
    p = argparse.ArgumentParser(); bench_options(p)
    args = p.parse_args(['--sizes', '32', '--models', 'cnn', '--batch-size', '2', '--steps', '1', '--nf', '8', '--device', 'cpu'])
    assert bench_command(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['device_type'] == 'cpu' and res['settings']['quick'] is True and [r['model'] for r in res['train']] == ['cnn'] * 4


def test_bench_rejects_an_unknown_model():
    p = argparse.ArgumentParser(); bench_options(p)
    with pytest.raises(ValueError, match='unknown model'): bench_command(p.parse_args(['--models', 'vgg']))


def test_bf16_autocast_loss_is_close_to_fp32():
    G, D, opt_g, opt_d = pix2pix_pair(32, nf=8)
    G.eval()
    torch.manual_seed(0)
    L, ab = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 2, 32, 32) * 2 - 1
    with torch.no_grad():
        l32 = F.l1_loss(G(L), ab)
        with autocast('cpu', torch.bfloat16): out = G(L)
    assert out.dtype == torch.bfloat16
    assert abs(F.l1_loss(out.float(), ab) - l32) < 1e-2 * l32


def _step(scaled: bool, inf_in_d: bool = False):
    G, D, opt_g, opt_d = pix2pix_pair(32, nf=8)
    torch.manual_seed(0)
    L, ab = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 2, 32, 32) * 2 - 1
    scalers = [torch.amp.GradScaler('cpu', init_scale=2.**10) if scaled else None for _ in range(2)]
    before = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
    h = next(D.parameters()).register_hook(lambda g: torch.full_like(g, float('inf'))) if inf_in_d else None
    gan_step(G, D, opt_g, opt_d, L, ab, scaler_g=scalers[0], scaler_d=scalers[1])
    if h is not None: h.remove()
    return G, D, before, scalers


def test_scaled_gan_step_makes_the_unscaled_update():
    G0, D0, _, _ = _step(False)
    G1, D1, _, scalers = _step(True)
    for a, b in zip([*G0.parameters(), *D0.parameters()], [*G1.parameters(), *D1.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [s.get_scale() for s in scalers] == [2.**10, 2.**10]


def test_scaled_gan_step_skips_d_on_inf_and_halves_its_scale():
    G, D, before, (s_g, s_d) = _step(True, inf_in_d=True)
    n_g = len(list(G.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before[n_g:], D.parameters()))         # D's step skipped
    assert any(not torch.equal(a, b) for a, b in zip(before[:n_g], G.parameters()))     # G's went ahead
    assert (s_d.get_scale(), s_g.get_scale()) == (2.**9, 2.**10)
    assert all(torch.isfinite(p).all() for p in [*G.parameters(), *D.parameters()])


def test_grad_scaler_only_for_float16():
    assert not grad_scaler('cpu', None).is_enabled() and not grad_scaler('cpu', torch.bfloat16).is_enabled()
    assert grad_scaler('cpu', torch.float16).is_enabled()


def test_flops_by_hand_and_by_flop_counter():
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16),
                        nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    x = torch.randn(3, 1, 16, 16)
    by_hand = 3 * 2 * (1*8*9*256 + 8*16*16*64 + 16*8*16*64 + 8*16*16*10)
    assert forward_flops(net, x) == by_hand == counted_flops(lambda: net(x))


def test_training_step_flops_are_three_forwards_less_the_first_input_gradient():
    G, D, opt_g, _ = pix2pix_pair(32, nf=8)
    L, ab = torch.rand(2, 1, 32, 32), torch.rand(2, 2, 32, 32)
    counted = counted_flops(lambda: l1_step(G, opt_g, L, ab))
    assert counted == 3 * forward_flops(G, L) - forward_flops(G.down[0], L)


def test_train_speed_row():
    r = train_speed('resnet', size=32, bs=2, amp=True, channels_last=True, steps=1, warmup=1, nf=8, device='cpu')
    assert (r['precision'], r['channels_last'], r['peak_fraction']) == ('bf16', True, None) and r['img_s'] > 0
    with pytest.raises(ValueError, match='model must be one of'): train_speed('vgg', device='cpu')
