"""Copy stored results to the course home: lesson 11's comparison grid and table, and the shipped colorizer's model card (lesson 12).

The home page (nbs/index.ipynb, and README.md rendered from it) shows the galleries and the tables
that nbs/11_evaluation.ipynb and nbs/12_inference.ipynb produced in their stored runs, never numbers
typed by hand.

    python tools/results.py     # write nbs/images/{gallery,shipped}.jpg and print the Markdown tables for index.ipynb
"""
import base64, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALUATION_NB = ROOT / 'nbs' / '11_evaluation.ipynb'
GALLERY = ROOT / 'nbs' / 'images' / 'gallery.jpg'
INFERENCE_NB = ROOT / 'nbs' / '12_inference.ipynb'
SHIPPED_GALLERY = ROOT / 'nbs' / 'images' / 'shipped.jpg'


def _code_cells(nb_path=EVALUATION_NB) -> list:
    return [c for c in json.loads(Path(nb_path).read_text())['cells'] if c['cell_type'] == 'code']


def _cell(nb_path, start: str) -> dict:
    "The code cell of `nb_path` whose source starts with `start`."
    return next(c for c in _code_cells(nb_path) if ''.join(c['source']).startswith(start))


def _jpeg(cell) -> bytes:
    "The JPEG figure a cell stored."
    return base64.b64decode(next(o for o in cell['outputs'] if 'image/jpeg' in o.get('data', {}))['data']['image/jpeg'])


def stored_table(nb_path=EVALUATION_NB, start: str = 'table = evaluate_models(checkpoints, dls)') -> dict:
    "The comparison table of the course's models in the stored outputs: {model: {metric: value}}."
    cell = _cell(nb_path, start)
    text = ''.join(next(o for o in cell['outputs'] if 'text/plain' in o.get('data', {}))['data']['text/plain'])
    header, *rows = text.strip().splitlines()
    cols = header.split()
    table = {}
    for row in rows:
        *name, values = row.rsplit(None, len(cols))[0], row.rsplit(None, len(cols))[1:]
        table[name[0].strip()] = dict(zip(cols, map(float, values)))
    return table


def table_markdown(table: dict) -> str:
    "The table as Markdown, with the metrics rounded as the lesson shows them."
    cols = list(next(iter(table.values())))
    fmt = lambda c, v: '' if v != v else f'{v:.1f}' if c in ('colorfulness', 'delta_cf') else f'{v:.2f}' if c == 'psnr' else f'{v:.3f}'
    lines = ['| model | ' + ' | '.join(cols) + ' |', '|---|' + '---:|' * len(cols)]
    lines += [f'| {name} | ' + ' | '.join(fmt(c, row[c]) for c in cols) + ' |' for name, row in table.items()]
    return '\n'.join(lines)


def stored_gallery(nb_path=EVALUATION_NB) -> bytes:
    "The JPEG of the comparison grid (gray | each model | truth) in the stored outputs."
    return _jpeg(_cell(nb_path, 'fig = comparison_grid(checkpoints'))


def shipped_table(nb_path=INFERENCE_NB) -> dict:
    "The shipped colorizer's scores on its held-out photos, next to the baselines and the truth, from lesson 12's model card."
    return stored_table(nb_path, 'def truth_colourfulness')


def shipped_gallery(nb_path=INFERENCE_NB) -> bytes:
    "The JPEG of the model card's gallery (gray | shipped colorizer | original) of held-out photos."
    return _jpeg(_cell(nb_path, 'def held_out_photo'))


if __name__ == '__main__':
    GALLERY.parent.mkdir(exist_ok=True)
    GALLERY.write_bytes(stored_gallery())
    SHIPPED_GALLERY.write_bytes(shipped_gallery())
    print('The shipped colorizer (nbs/images/shipped.jpg):\n' + table_markdown(shipped_table()))
    print('\nLesson 11 (nbs/images/gallery.jpg):\n' + table_markdown(stored_table()))
    sys.exit(0)
