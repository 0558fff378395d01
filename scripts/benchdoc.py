"""Writes one benchmark's generated section into docs/benchmarks.md.

Each script owns the text between its two markers; everything else in the
file (notes, explanations) is left as it is.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def replace_section(name, text):
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        before, rest = doc.split(start, 1)
        after = rest.split(end, 1)[1]
        doc = before + block + after
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(doc)
