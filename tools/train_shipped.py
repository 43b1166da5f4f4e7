#!/usr/bin/env python
"""Train the colorizer that ships inside the package, under a protocol written down before any score.

The protocol (lesson 12's model card repeats it):

- **Fixed in advance**: the architecture, lesson 06's U-Net at 64 px (`n_down=6`, width 32) with the
  resizing decoder (`up='resize'`: no checkerboard), L1 loss and one-cycle (the recipe of lessons 05
  and 06), the course's fast CPU path, the batch size, the learning rate and the budget (`--epochs`
  of `--epoch-len` random crops).
- **Training data**: Tiny ImageNet's `train/` (its colour photos) and the ImageNet sample's training
  photos (all but its seed-42 10% split, which lesson 12 holds out). 1% of them, chosen by the
  seed, show how training goes (a validation loss, nothing else).
- **Chosen on BSDS500 only** (`select`): the epoch (lowest ab L1), the chroma gain (the largest
  that keeps half of the lead over the better baseline, gray or the mean colour of the training
  photos, in ab L1 and AuC) and the default render size.
- **Tested once, at the end**, by lesson 12, on Tiny ImageNet's `val/` and the 88 held-out photos
  of the ImageNet sample. This script never scores either.

    python tools/train_shipped.py train --tiny PATH/tiny-imagenet-200 --sample PATH/imagenet-sample --work runs/shipped
    python tools/train_shipped.py train ... --work runs/shipped --resume     # after an interruption
    python tools/train_shipped.py select --work runs/shipped --select-on PATH/bsds500 --out colorizer.safetensors

`train` keeps a checkpoint after every epoch in `--work` (the model as `epochNN.safetensors`, and
the model with its optimizer to resume from); `select` reads them.
"""
import argparse, json, os, platform, sys, time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch


def cpu_name() -> str:
    "The CPU's model name, as /proc/cpuinfo gives it (or platform's guess)."
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def hardware(device) -> str:
    "The hardware a run used, in words."
    if device.type == 'cuda': return f'one {torch.cuda.get_device_name(device)}'
    return f'{cpu_name()}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores, no GPU'

PROTOCOL = ('architecture, loss, schedule, batch size, learning rate and budget fixed before training; trained on Tiny ImageNet train/ '
            'and the ImageNet sample outside its seed-42 10% split; epoch, chroma gain and render size chosen on BSDS500 only; '
            'tested once, at the end, on Tiny ImageNet val/ and the 88 held-out ImageNet-sample photos (lesson 12)')


def held_in_sample(sample, size: int) -> list:
    "The ImageNet sample's training photos: all usable ones but the seed-42 10% split that lesson 12 holds out."
    from colorcourse.data import colorization_dls
    dls = colorization_dls(sample, size=size, valid_pct=0.1, seed=42, progress=False)
    return sorted(Path(name) for name in dls.train.dataset.names)   # a folder's images are named by their paths


def training_files(tiny, sample, size: int) -> list:
    "Every image file of Tiny ImageNet's train/ and the ImageNet sample's training photos (the gray ones drop out later)."
    from colorcourse.data import find_images
    tiny_train = Path(tiny) / 'train'
    if not tiny_train.is_dir(): sys.exit(f'{tiny} has no train/ folder: pass the tiny-imagenet-200 folder')
    return sorted(find_images(tiny_train)) + held_in_sample(sample, size)


def state_file(work: Path) -> Path: return work / 'state.json'


def read_state(work: Path) -> dict:
    "What `train` has done so far in `work` (epochs, minutes, losses, the recipe), or {} before it starts."
    f = state_file(work)
    return json.loads(f.read_text()) if f.exists() else {}


def write_state(work: Path, state: dict):
    "Write the state atomically: a crash mid-write leaves the previous one."
    tmp = state_file(work).with_suffix('.tmp')
    tmp.write_text(json.dumps(state, indent=1)); tmp.replace(state_file(work))


def train(args) -> int:
    if args.threads: torch.set_num_threads(args.threads)
    from fastai.callback.core import Callback
    import colorcourse
    from colorcourse.core import seed_everything
    from colorcourse.data import colorization_dls
    from colorcourse.training import colorization_learner, mean_ab, train_view, save_checkpoint
    from colorcourse.unet import UnetGenerator

    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    state = read_state(work)
    recipe = dict(arch='UnetGenerator', n_down=6, nf=args.nf, up='resize', size=args.size, bs=args.bs, lr=args.lr,
                  epochs=args.epochs, epoch_len=args.epoch_len, seed=args.seed, loss='L1', schedule='one-cycle')
    if state and not args.resume: sys.exit(f'{work} holds a run already: pass --resume to continue it, or another --work')
    if state and state['recipe'] != recipe: sys.exit(f'{work} holds a run of another recipe: {state["recipe"]}')
    done = state.get('epochs_done', 0)
    if done >= args.epochs: print(f'all {args.epochs} epochs done'); return 0

    seed_everything(args.seed)
    files = training_files(args.tiny, args.sample, args.size)
    dls = colorization_dls(files, size=args.size, bs=args.bs, valid_pct=0.01, seed=args.seed, epoch_len=args.epoch_len,
                           cache_side=args.size, progress=True)
    if 'mean_colour' not in state:
        state.update(recipe=recipe, epochs_done=0, minutes=0., history=[], hardware=hardware(dls.device),
                     data=dict(files=len(files), usable=dls.counts.used, gray=dls.counts.gray, unreadable=dls.counts.unreadable,
                               train=len(dls.train.dataset), watch=len(dls.valid.dataset)),
                     mean_colour=list(mean_ab(train_view(dls), None)))
        write_state(work, state)
    print(f"{state['data']} | mean colour {[round(v, 4) for v in state['mean_colour']]} | {hardware(dls.device)}", flush=True)

    seed_everything(args.seed)
    net = UnetGenerator(n_down=6, nf=args.nf, up='resize')
    learn = colorization_learner(dls, net, lr=args.lr, fast=True, metrics=[])
    if done:
        learn.load(work / 'last', with_opt=True)
        dls.train.reseed(args.seed + done)   # fresh crops for the epochs still to come
        print(f'resuming after epoch {done}', flush=True)

    class EpochCheckpoint(Callback):
        "After each epoch: the model (safetensors, for `select`), the model with its optimizer (to resume), and the state."
        order = 100
        def before_fit(self): self.t0 = time.perf_counter()
        def after_epoch(self):
            n = self.epoch + 1
            if n <= done: return   # an epoch that `start_epoch` skipped
            minutes = state['minutes'] + (time.perf_counter() - self.t0) / 60
            self.t0 = time.perf_counter()
            learn.save(work / 'last', with_opt=True)
            save_checkpoint(work / f'epoch{n:02d}.safetensors', learn.model, size=args.size, overwrite=True,
                            recipe='shipped-unet-resize-l1', epoch=n, train_minutes=round(minutes, 1))
            losses = [float(v) for v in self.recorder.values[-1][:2]]
            state.update(epochs_done=n, minutes=round(minutes, 2),
                         history=state['history'] + [dict(epoch=n, train_loss=losses[0], watch_loss=losses[1], minutes=round(minutes, 1))])
            write_state(work, state)
            print(f'epoch {n}/{args.epochs}: train L1 {losses[0]:.4f}, watch L1 {losses[1]:.4f}, {minutes:.1f} min in all', flush=True)

    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.epochs, args.lr, start_epoch=done, cbs=EpochCheckpoint())
    state.update(torch=torch.__version__, colorcourse=colorcourse.__version__,
                 trained=datetime.now(timezone.utc).strftime('%Y-%m-%d'))
    write_state(work, state)
    return 0


RENDER_SIZES = (64, 96, 128, 192, 256)   # the short sides `select` tries for the default render size


def baseline_scores(loader, mean_colour) -> dict:
    "ab L1 and AuC of gray and of the mean colour of the training photos on `loader`'s photos."
    from colorcourse.metrics import ab_auc
    abs_ = torch.cat([ab.float().cpu() for _, ab in loader])
    gray, mean = torch.zeros_like(abs_), torch.tensor(mean_colour).view(1, 2, 1, 1).expand_as(abs_)
    return {name: dict(ab_l1=(p - abs_).abs().mean().item(), ab_auc=ab_auc(p, abs_)) for name, p in (('gray', gray), ('mean colour', mean))}


def choose_epoch(work: Path, loader) -> tuple:
    "The epoch whose checkpoint has the lowest ab L1 on `loader`'s photos, and every epoch's ab L1."
    from colorcourse.inference import load_colorizer, predict_ab
    scores = {}
    for path in sorted(work.glob('epoch*.safetensors')):
        net = load_colorizer(path)
        err = [(predict_ab(net, L).float().cpu() - ab.float().cpu()).abs().sum().item() for L, ab in loader]
        n = sum(ab.numel() for _, ab in loader)
        scores[int(path.stem[5:])] = sum(err) / n
    if not scores: sys.exit(f'no epoch checkpoint in {work}: run train first')
    return min(scores, key=scores.get), scores


def render_size_curve(model, photos: list, sizes=RENDER_SIZES) -> dict:
    "ab L1 at full resolution (against each photo's own ab) and median seconds per photo of `colorize` at each render size."
    from colorcourse.core import open_image
    from colorcourse.inference import colorize
    from colorcourse.lab import lab_encode
    def ab_of(img): return lab_encode(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255)[1]
    truths = [(open_image(p), None) for p in photos]
    truths = [(img, ab_of(img)) for img, _ in truths]
    curve = {}
    for r in sizes:
        errs, secs = [], []
        for img, ab in truths:
            t0 = time.perf_counter(); out = colorize(img.convert('L'), model, render_size=r); secs.append(time.perf_counter() - t0)
            errs.append((ab_of(out.convert('RGB')) - ab).abs().mean().item())
        curve[r] = dict(ab_l1=float(np.mean(errs)), seconds=float(np.median(secs)))
        print(f'render size {r}: ab L1 {curve[r]["ab_l1"]:.4f} at full resolution, {curve[r]["seconds"]:.3f} s a photo', flush=True)
    return curve


def select(args) -> int:
    "Choose the epoch, the gain and the render size on BSDS500, and write the shipped checkpoint (fp16)."
    if args.threads: torch.set_num_threads(args.threads)
    import colorcourse
    from colorcourse.core import find_images
    from colorcourse.inference import ChromaGain, choose_gain, gain_curve, load_colorizer, save_checkpoint
    from colorcourse.training import whole_images
    work, out = Path(args.work), Path(args.out)
    if out.exists(): sys.exit(f'{out} exists; remove it first')
    state = read_state(work)
    if not state.get('epochs_done'): sys.exit(f'{work} holds no trained epoch: run train first')
    size = state['recipe']['size']
    squares = whole_images(args.select_on, size, progress=False, device='cpu')
    epoch, by_epoch = choose_epoch(work, squares)
    print(f'BSDS500 ab L1 by epoch: { {e: round(v, 4) for e, v in by_epoch.items()} } -> epoch {epoch}', flush=True)
    G = load_colorizer(work / f'epoch{epoch:02d}.safetensors').eval().half().float()   # the weights as the fp16 file will hold them
    baselines = baseline_scores(squares, state['mean_colour'])
    curve = gain_curve(G, squares)
    print(curve.round(4).to_string(), '\nbaselines:', baselines, flush=True)
    try: gain = choose_gain(curve, baselines=baselines)
    except ValueError as e: sys.exit(f'{e}; nothing written')
    print(f'chosen gain: {gain}', flush=True)
    model = ChromaGain(G, gain).eval()
    photos = sorted(find_images(args.select_on))
    sizes = render_size_curve(model, photos)
    best = min(v['ab_l1'] for v in sizes.values())
    render_size = min(r for r, v in sizes.items() if v['ab_l1'] <= best + args.render_tolerance)
    print(f'chosen render size: {render_size}', flush=True)
    meta = dict(recipe='shipped-unet-resize-l1', protocol=PROTOCOL, **{k: state[k] for k in ('data', 'hardware', 'history', 'mean_colour')},
                train=state['recipe'], train_minutes=round(state['minutes'], 1), epoch=epoch, selection=f'{Path(args.select_on).name}: '
                f'{len(squares.dataset)} photos as {size}-px whole squares (epoch, gain); {len(photos)} at full resolution (render size)',
                bsds_ab_l1_by_epoch=by_epoch, gain=gain, gain_rule='choose_gain: the largest gain keeping half the lead over the better baseline '
                '(gray or the mean colour) in ab L1 and AuC', calibration_curve=[[g, *(round(float(v), 6) for v in row)] for g, row in zip(curve.index, curve.values)],
                baselines=baselines, render_size=render_size, render_size_curve=sizes,
                torch=torch.__version__, colorcourse=colorcourse.__version__, trained=state.get('trained'))
    save_checkpoint(out, model.half(), size=size, **meta)
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)')
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    t = sub.add_parser('train', help='train, with a checkpoint after every epoch')
    t.add_argument('--tiny', required=True, help="the tiny-imagenet-200 folder (download('tiny-imagenet'))")
    t.add_argument('--sample', required=True, help="the ImageNet sample folder (download('imagenet-sample'))")
    t.add_argument('--work', required=True, help='folder for the checkpoints and the state of the run')
    t.add_argument('--resume', action='store_true', help='continue the run in --work')
    t.add_argument('--size', type=int, default=64)
    t.add_argument('--nf', type=int, default=32)
    t.add_argument('--bs', type=int, default=32)
    t.add_argument('--lr', type=float, default=2e-3)
    t.add_argument('--epochs', type=int, default=8)
    t.add_argument('--epoch-len', type=int, default=65536, help='random crops per epoch')
    t.add_argument('--seed', type=int, default=42)
    t.add_argument('--threads', type=int, default=None, help='CPU threads for torch (default: all)')
    c = sub.add_parser('select', help='choose the epoch, the gain and the render size on BSDS500; write the shipped checkpoint')
    c.add_argument('--work', required=True, help="the folder `train` wrote")
    c.add_argument('--select-on', required=True, help='the photos that choose (BSDS500: train_*.jpg and val_*.jpg)')
    c.add_argument('--out', required=True, help='the checkpoint to write (.safetensors)')
    c.add_argument('--render-tolerance', type=float, default=0.0005, help='the smallest render size within this ab L1 of the best wins')
    c.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    return train(args) if args.command == 'train' else select(args)


if __name__ == '__main__': sys.exit(main())
