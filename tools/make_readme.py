"""Make README.md from nbs/index.ipynb with nbconvert (Quarto, which nbdev-readme needs, is not available).

Cells flagged `#| hide` are dropped and nbdev directives are stripped, as nbdev's own README would."""
import sys, re, nbformat
from nbconvert import MarkdownExporter

def main(src, dst):
    nb = nbformat.read(src, as_version=4)
    nb.metadata.setdefault('language_info', {'name': 'python'})   # nbdev-clean drops it; code fences need it
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        directives = [l for l in lines if re.match(r'^#\|', l.strip())]
        if any(re.match(r'#\|\s*(hide|export|exporti|default_exp)\b', d.strip()) for d in directives): continue
        if c.cell_type == 'code' and any('hide_input' in d or 'echo: false' in d for d in directives): c.source = ''
        else: c.source = '\n'.join(l for l in lines if not re.match(r'^#\|', l.strip())).strip()
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    with open(dst, 'w') as f: f.write(body)

if __name__ == '__main__': main(*sys.argv[1:3])
