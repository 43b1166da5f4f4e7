"""What each training lesson's full configuration costs on a Colab T4: an estimate from counted FLOPs, until a GPU measures it.

    python tools/t4_cost.py              # every lesson that has a workload below: minutes, GPU memory, RAM (JSON)
    python tools/t4_cost.py 06_unet      # one lesson
    python tools/t4_cost.py --check      # each lesson's stated cost against the estimate (tests/test_t4_cost.py runs it)

How the estimate is made:

- **FLOPs.** One training step of each model a lesson trains (the builders of `tools/gpu_check.py`, at the full
  configuration's image size, width and batch size, on random photos) runs inside `torch.utils.flop_counter.FlopCounterMode`,
  and so does one forward pass for scoring. A lesson's FLOPs are, summed over its models, the number of times the
  notebook trains that model (`RUNS`) × (its training steps × the FLOPs of a step + the images it scores × the FLOPs
  of a forward pass per image): the validation images after every epoch and the test images at the end.
- **Time.** FLOPs / the T4's sustained rate: `SUSTAINED` (an assumption, a quarter) of the peak in NVIDIA's T4
  datasheet, 65 TFLOP/s with fp16 tensor cores for lessons that train in mixed precision, 8.1 TFLOP/s in fp32 for
  the others; a batch takes at least `MIN_STEP_S` (assumed), however few its FLOPs. Building the image cache the
  first time (lesson 02) is not counted.
- **GPU memory.** 16 bytes per parameter (fp32 weights, gradients and Adam's two moments) + the tensors one training
  step saves for its backward pass (counted with `saved_tensors_hooks`, in fp32: under mixed precision they are
  smaller) + `CUDA_CONTEXT_GB` for CUDA's context and cuDNN's workspace; the largest model decides.
- **RAM.** The uint8 image cache that lesson 02 builds for the full dataset (`tools/lesson_configs.py`) +
  `PROCESS_RAM_GB` for Python with PyTorch, fastai and CUDA's libraries (assumed).

Each lesson states its figures in a line of the form `**Cost of the full run on a Colab T4** (...): about N minutes, X GB
of GPU memory and Y GB of RAM`; `--check` fails when a stated figure drifts from the estimate.
"""
import argparse, gc, json, re, sys, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

T4_DATASHEET = 'https://www.nvidia.com/en-us/data-center/tesla-t4/'
T4_PEAK = {'mixed': 65e12, 'fp32': 8.1e12}   # FLOP/s, NVIDIA T4 datasheet
SUSTAINED = 0.25                              # the share of the peak a small convolutional network is assumed to sustain
MIN_STEP_S = 0.01                             # a step of a small network cannot be faster: kernel launches, fastai's callbacks
CUDA_CONTEXT_GB = 0.5
PROCESS_RAM_GB = 3.0

# Photos a full run trains on and is tested on: the folders `train_test_folders` picks (lesson 04).
TRAIN_IMAGES = {'tiny-imagenet': 100_000, 'cifar10': 50_000, 'imagenette-320': 9_469}
TEST_IMAGES = {'tiny-imagenet': 10_000, 'cifar10': 10_000, 'imagenette-320': 3_925}

# How many times each notebook trains each model of `gpu_check.LESSON_MODELS` in its full run (models of equal cost share
# a name: lesson 05's ColorCNN with MSE, L1 and smooth L1 all count as 'ColorCNN, L1'). A list holds one such dict per
# `course_config` call of the notebook, in order, for a lesson whose experiments run at two configurations.
RUNS = {
    '04_training': {'simple_colorizer, L1': 1},
    '05_cnn': {'plain CNN, L1': 1, 'ColorCNN, L1': 'seeds*2+1', 'ColorCNN, classes': 'seeds'},   # MSE and L1 per seed, smooth L1 once
    '06_unet': {'U-Net, L1': 'seeds*2', 'no skips, L1': 'seeds'},                                  # L2 and L1 per seed; no skips per seed
    '07_dcgan': {'U-Net + DCGAN': 'seeds', 'U-Net, L1': 'seeds'},
    # pix2pix and L1 per seed; the pre-trained model's L1 third and GAN two thirds; the RGB model costs what an L1 U-Net does
    '08_pix2pix': {'pix2pix (70x70 PatchGAN)': 'seeds + 2/3', 'U-Net, L1': 'seeds + 1/3 + 1', 'PixelGAN': 1, '16x16 PatchGAN': 1,
                   'whole-image discriminator': 1},
    # Ehrenberg's PixelGANs and the L1 model on CIFAR-10; then the 34x34 PatchGANs per seed and the L1 reference on Tiny ImageNet
    # the five generators; the ResNet-18 U-Net from random, pretrained and ImageNet weights, the first two again per extra seed;
    # the recipe under three initializations; the classifier's pretraining, in units of a generator's run (same images per step)
    '09_resnet': {'autoencoder': 1, 'U-Net': 1, 'ResNet': 1, 'ResNet-18 U-Net': '3 + 2 * (seeds - 1)', 'ResNet + PatchGAN': '3 * recipe_epochs / epochs',
                  'ResNet-18 classifier': 'pretrain_epochs / epochs'},
    # one model per lesson; the two headline models once per seed; the encoder's pretraining when lesson 09 has not left it
    '11_evaluation': {'CNN, L1': 1, 'CNN, classes': 1, 'U-Net, L1': 'seeds', 'U-Net + DCGAN': 1, 'pix2pix': 'seeds',
                      'ResNet pix2pix': 1, 'ResNet-18 U-Net': 1, 'pix2pix, SN PatchGAN': 1, 'ResNet-18 classifier': 'pretrain_epochs / epochs'},
    '10_spectral_norm': [{'PixelGAN, spectral norm': 1, 'PixelGAN, BatchNorm': 1, 'U-Net, L1': 1},
                         {'PatchGAN 34x34, spectral norm': 'seeds', 'PatchGAN 34x34, BatchNorm': 'seeds', 'U-Net, L1': 1}],
}
FP32_LESSONS = ('10_spectral_norm',)   # lessons whose full run trains without mixed precision on a GPU (lesson 10 builds its Learners without fast=True)

STATED = re.compile(r"\*\*Cost of the full run on a Colab T4\*\*.*?: about ([\d,]+) minutes?, ([\d.]+) GB of GPU memory and "
                    r"([\d.]+) GB of RAM", re.S)


def run_count(value, cfg: dict) -> float:
    "A `RUNS` entry as a number: a number, or an expression in the configuration's settings, such as `seeds` (a fraction for a run cut short)."
    return value if isinstance(value, (int, float)) else float(eval(value, {}, {**cfg, 'seeds': cfg.get('seeds', 1)}))


def synthetic_dls(size: int, bs: int):
    "DataLoaders of random (L, ab) photos in model space, one training batch and one validation batch, on the CPU."
    import torch
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from colorcourse.lab import lab_encode
    torch.manual_seed(0)
    L, ab = lab_encode(torch.rand(bs, 3, size, size))
    items = list(zip(L, ab))
    dls = DataLoaders(DataLoader(items, bs=bs, shuffle=False, drop_last=True, num_workers=0), DataLoader(items, bs=bs, num_workers=0),
                      device='cpu')   # no worker processes: a fit cancelled after one batch would leave them running
    dls.size = size
    return dls


def step_cost(make_learner, cfg: dict) -> dict:
    "FLOPs of one training step and of one forward pass per image, parameters, and bytes saved for backward, of one model."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from fastai.callback.core import Callback, CancelFitException
    dls = synthetic_dls(cfg['size'], cfg['bs'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = make_learner(cfg, dls)
    counter, saved = FlopCounterMode(display=False), {}

    def pack(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    class OneStep(Callback):
        "Count the FLOPs and saved tensors of the first training batch, then end the fit."
        order = -100
        def before_batch(self):
            self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            counter.__enter__(); self.hooks.__enter__()
        def after_batch(self):
            self.hooks.__exit__(None, None, None); counter.__exit__(None, None, None)
            raise CancelFitException()

    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[OneStep()])
    net = getattr(learn.model, 'generator', learn.model).eval()
    forward = FlopCounterMode(display=False)
    with forward, torch.no_grad(): net(dls.one_batch()[0])
    cost = dict(step_flops=counter.get_total_flops(), forward_flops_per_image=forward.get_total_flops() / cfg['bs'],
                params=sum(p.numel() for p in learn.model.parameters()), saved_bytes=sum(saved.values()))
    del learn, net, dls; gc.collect()   # a Learner's reference cycles hold its model and optimizer until collected: free them per model
    return cost


def config_cost(stem: str, runs: dict, cfg: dict, precision: str) -> dict:
    "The estimated cost of the models `runs` trains at one full configuration `cfg` of lesson `stem`."
    from gpu_check import LESSON_MODELS
    from lesson_configs import cache_bytes
    n_train, n_test = TRAIN_IMAGES[cfg['dataset']], TEST_IMAGES[cfg['dataset']]
    n_valid = round(n_train * cfg.get('valid_pct', 0.1))
    steps = (cfg.get('epoch_len') or n_train - n_valid) // cfg['bs'] * cfg['epochs']
    scored = cfg['epochs'] * n_valid + n_test
    rate = SUSTAINED * T4_PEAK[precision]
    models, flops, seconds = {}, 0., 0.
    for name, count in runs.items():
        c = step_cost(LESSON_MODELS[stem][name], cfg)
        c['runs'] = run_count(count, cfg)
        c['flops'] = c['runs'] * (steps * c['step_flops'] + scored * c['forward_flops_per_image'])
        c['seconds'] = c['runs'] * (steps * max(c['step_flops'] / rate, MIN_STEP_S)
                                    + scored / cfg['bs'] * max(cfg['bs'] * c['forward_flops_per_image'] / rate, MIN_STEP_S / 3))
        c['gpu_gb'] = (16 * c['params'] + c['saved_bytes']) / 1e9 + CUDA_CONTEXT_GB
        models[name], flops, seconds = c, flops + c['flops'], seconds + c['seconds']
    return dict(models=models, flops=flops, seconds=seconds, steps=steps, scored=scored,
                cache_gb=cache_bytes(cfg['size'], n_train + n_test, cfg.get('cache_side')) / 1e9)


def lesson_cost(stem: str) -> dict:
    "The estimated cost of lesson `stem`'s full run on a T4: minutes, GPU memory (GB), RAM (GB), and how they were reached."
    from lesson_configs import NBS, lesson_config
    import gpu_check
    gpu_check.lesson_amp = lambda learn: learn    # count the fp32 graph: the FLOPs are the same under mixed precision
    precision = 'fp32' if stem in FP32_LESSONS else 'mixed'
    parts = RUNS[stem] if isinstance(RUNS[stem], list) else [RUNS[stem]]
    costs = [config_cost(stem, runs, lesson_config(NBS / f'{stem}.ipynb', 'full', i), precision) for i, runs in enumerate(parts)]
    models = {f'{name} (configuration {i + 1})' if len(costs) > 1 else name: m for i, c in enumerate(costs) for name, m in c['models'].items()}
    seconds = sum(c['seconds'] for c in costs)
    return dict(lesson=stem, minutes=max(1, round(seconds / 60)), gpu_gb=round(max(m['gpu_gb'] for m in models.values()), 1),
                ram_gb=round(max(c['cache_gb'] for c in costs) + PROCESS_RAM_GB, 1),
                flops=sum(c['flops'] for c in costs), precision=precision, sustained_tflops=SUSTAINED * T4_PEAK[precision] / 1e12,
                steps_per_run=[c['steps'] for c in costs] if len(costs) > 1 else costs[0]['steps'],
                images_scored_per_run=[c['scored'] for c in costs] if len(costs) > 1 else costs[0]['scored'], models=models)


def stated_cost(stem: str):
    "The figures a lesson states for its full run on a T4: `(minutes, gpu_gb, ram_gb)`, or None if it states none."
    from lesson_configs import NBS
    text = '\n'.join(''.join(c['source']) for c in json.loads((NBS / f'{stem}.ipynb').read_text())['cells'] if c['cell_type'] == 'markdown')
    m = STATED.search(text)
    return None if m is None else (int(m[1].replace(',', '')), float(m[2]), float(m[3]))


def statement(cost: dict) -> str:
    "The sentence a lesson states, from an estimate."
    return (f"**Cost of the full run on a Colab T4** (an estimate: {cost['flops'] / 1e15:,.1f} PFLOP counted with "
            f"`torch.utils.flop_counter`, at a sustained {cost['sustained_tflops']:g} TFLOP/s, a quarter of the "
            f"[T4's peak]({T4_DATASHEET}), and at least {MIN_STEP_S * 1000:g} ms a batch; a measurement on a T4 will replace "
            f"it): about {cost['minutes']:,} minute{'s' if cost['minutes'] != 1 else ''}, "
            f"{cost['gpu_gb']} GB of GPU memory and {cost['ram_gb']} GB of RAM.")


def drift(stem: str, cost: dict = None) -> list:
    "What a lesson states that disagrees with the estimate (minutes within 5% or 1, memory within 0.1 GB); [] if it agrees."
    cost = cost or lesson_cost(stem)
    stated = stated_cost(stem)
    if stated is None: return [f"{stem} states no cost on a T4; add: {statement(cost)}"]
    minutes, gpu, ram = stated
    out = []
    if abs(minutes - cost['minutes']) > max(1, 0.05 * cost['minutes']): out.append(f"{stem}: {minutes} minutes stated, {cost['minutes']} estimated")
    if round(abs(gpu - cost['gpu_gb']), 2) > 0.1: out.append(f"{stem}: {gpu} GB of GPU memory stated, {cost['gpu_gb']} estimated")
    if round(abs(ram - cost['ram_gb']), 2) > 0.1: out.append(f"{stem}: {ram} GB of RAM stated, {cost['ram_gb']} estimated")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('lessons', nargs='*', help=f"notebook stems (default: {', '.join(RUNS)})")
    p.add_argument('--check', action='store_true', help="compare each lesson's stated cost with the estimate")
    args = p.parse_args(argv)
    stems = args.lessons or list(RUNS)
    unknown = [s for s in stems if s not in RUNS]
    if unknown: p.error(f"no workload for {unknown}; known: {list(RUNS)}")
    costs = {s: lesson_cost(s) for s in stems}
    if args.check:
        problems = [d for s in stems for d in drift(s, costs[s])]
        print('\n'.join(problems) or f"the stated costs agree with the estimates: {', '.join(stems)}")
        return 1 if problems else 0
    print(json.dumps({s: {**{k: v for k, v in c.items() if k != 'models'}, 'statement': statement(c)} for s, c in costs.items()}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
