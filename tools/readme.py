"""Render README.md from nbs/index.ipynb as `nbdev-readme` does, with pandoc instead of Quarto.

Quarto cannot be installed on the build machines, but pandoc (Quarto's renderer) can. This runs
nbdev's own notebook processors on the course home, writes it as Markdown (title, description,
markdown cells, visible code cells and their text output), rewrites links to lessons into links
to the docs site with nbdev's README filter, points images at the repository's raw files,
and lets pandoc write GitHub Markdown.

    python tools/readme.py          # rewrite README.md
    python tools/readme.py --check  # exit 1 if README.md is out of date
"""
import json, shutil, subprocess, sys
from pathlib import Path

import yaml
from fastcore.nbio import read_nb
from nbdev.config import get_config
from nbdev.processors import FilterDefaults
from nbdev.readme_filter import rewrite_links

ROOT = Path(__file__).resolve().parent.parent


def _front_matter(cell) -> dict:
    "The YAML front matter nbdev makes of the notebook's title cell."
    return yaml.safe_load(cell.source.strip().strip('-')) or {}


def _cell_markdown(cell) -> str:
    "A processed cell as Markdown: markdown as it is, code fenced with its text output."
    if cell.cell_type == 'markdown': return cell.source
    if cell.cell_type != 'code' or not cell.source.strip(): return ''
    outs = []
    for o in cell.get('outputs', []):
        text = o.get('text') or o.get('data', {}).get('text/plain')
        if text: outs.append(''.join(text))
    return f"```python\n{cell.source}\n```" + ''.join(f"\n\n```\n{t.rstrip()}\n```" for t in outs)


def notebook_markdown(nb_path) -> str:
    "The course home notebook as one Markdown document, after nbdev's doc processors."
    nb = read_nb(nb_path)
    FilterDefaults()(nb)
    parts, meta = [], {}
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.lstrip().startswith('---'): meta = _front_matter(cell)
        else: parts.append(_cell_markdown(cell))
    head = [f"# {meta['title']}"] if meta.get('title') else []
    if meta.get('description'): head.append(f"> {meta['description']}")
    return '\n\n'.join(p for p in head + parts if p.strip()) + '\n'


def rewrite_images(node, raw_base: str):
    "Point relative image paths (relative to nbs/) at the raw files of the repository, so GitHub and PyPI show them."
    if isinstance(node, list):
        for item in node: rewrite_images(item, raw_base)
    elif isinstance(node, dict):
        if node.get('t') == 'Image' and '://' not in node['c'][2][0]:
            node['c'][2][0] = f"{raw_base}/nbs/{node['c'][2][0].lstrip('./')}"
        for item in node.values(): rewrite_images(item, raw_base)


def raw_files_url(root=ROOT) -> str:
    "The URL of the raw files on the main branch, from pyproject.toml's Repository URL."
    import tomllib
    repo = tomllib.loads((Path(root) / 'pyproject.toml').read_text())['project']['urls']['Repository']
    return repo.replace('https://github.com/', 'https://raw.githubusercontent.com/').rstrip('/') + '/main'


def render_readme(root=ROOT, nb_path=None) -> str:
    "README.md's text, rendered from the configured readme notebook (or from `nb_path`, a version of it not yet written)."
    if shutil.which('pandoc') is None:
        raise RuntimeError("pandoc is not installed: `apt-get install pandoc` (Debian/Ubuntu) or see pandoc.org")
    cfg = get_config(root)
    md = notebook_markdown(nb_path or cfg.nbs_path / cfg.readme_nb)
    run = lambda args, text: subprocess.run(['pandoc', *args], input=text, capture_output=True, text=True, check=True).stdout
    doc = json.loads(run(['-f', 'markdown', '-t', 'json'], md))
    rewrite_links(doc['blocks'], cfg.doc_url, Path(cfg.readme_nb).parent.as_posix())
    rewrite_images(doc['blocks'], raw_files_url(root))
    return run(['-f', 'json', '-t', 'gfm', '--wrap=preserve'], json.dumps(doc))


def main(argv=None):
    "Write README.md, or with --check report whether it is up to date."
    argv = sys.argv[1:] if argv is None else argv
    readme, text = ROOT / 'README.md', render_readme()
    if '--check' in argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == '__main__': sys.exit(main())
