"""Copy the results of lesson 11's stored run to the course home: its comparison grid and its table.

The home page (nbs/index.ipynb, and README.md rendered from it) shows the gallery and the table that
nbs/11_evaluation.ipynb produced in its stored run, never numbers typed by hand.

    python tools/results.py     # write nbs/images/gallery.jpg and print the Markdown table for index.ipynb
"""
import base64, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALUATION_NB = ROOT / 'nbs' / '11_evaluation.ipynb'
GALLERY = ROOT / 'nbs' / 'images' / 'gallery.jpg'


def _code_cells(nb_path=EVALUATION_NB) -> list:
    return [c for c in json.loads(Path(nb_path).read_text())['cells'] if c['cell_type'] == 'code']


def stored_table(nb_path=EVALUATION_NB) -> dict:
    "The comparison table of the course's models in the stored outputs: {model: {metric: value}}."
    cell = next(c for c in _code_cells(nb_path) if ''.join(c['source']).startswith('table = evaluate_models(checkpoints, dls)'))
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
    fmt = lambda c, v: f'{v:.1f}' if c in ('colorfulness', 'delta_cf') else f'{v:.2f}' if c == 'psnr' else f'{v:.3f}'
    lines = ['| model | ' + ' | '.join(cols) + ' |', '|---|' + '---:|' * len(cols)]
    lines += [f'| {name} | ' + ' | '.join(fmt(c, row[c]) for c in cols) + ' |' for name, row in table.items()]
    return '\n'.join(lines)


def stored_gallery(nb_path=EVALUATION_NB) -> bytes:
    "The JPEG of the comparison grid (gray | each model | truth) in the stored outputs."
    cell = next(c for c in _code_cells(nb_path) if ''.join(c['source']).startswith('fig = comparison_grid(checkpoints'))
    return base64.b64decode(next(o for o in cell['outputs'] if 'image/jpeg' in o.get('data', {}))['data']['image/jpeg'])


if __name__ == '__main__':
    GALLERY.parent.mkdir(exist_ok=True)
    GALLERY.write_bytes(stored_gallery())
    print(table_markdown(stored_table()))
    sys.exit(0)
