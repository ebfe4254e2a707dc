"""The kernel library's source: every `kernels/*.cl` file, templates written out, in an order
that compiles. A Device builds it once per (context, precision)."""
from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from grenade_py.errors import DeviceError


def kernel_dir() -> Path:
    """The folder holding the `.cl` sources: the installed `grenade_py.kernels` package, or the
    source tree's top-level `kernels/` folder in an editable checkout."""
    try:
        installed = Path(str(resources.files("grenade_py.kernels")))
        if any(installed.glob("*.cl")):
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "kernels"


#: The kernel files that define what the others use, in this order (gemm.cl: the vector type
#: and sums; activations.cl: the activations' functions; optimizers.cl: the optimisers' rules;
#: loss.cl: the loss gradient; convolution.cl: the windows covering a pixel, for pooling). The
#: others follow in any order.
FOUNDATIONS = ("gemm.cl", "activations.cl", "optimizers.cl", "loss.cl", "convolution.cl")


@functools.lru_cache(maxsize=4)
def kernel_source(files: tuple[str, ...] | None = None) -> str:
    """All `.cl` files of the kernel library, concatenated: FOUNDATIONS first, then the rest
    (by name, though any order compiles). With `files`: FOUNDATIONS and those only, without
    their templates (the register-blocked GEMMs) and kernels (those a file defines by name):
    the functions a generated loop calls, which build in a fraction of the whole library's
    time (PoCL, AVX2 EPYC: the fused loops' part 1.0 s with no kernels, 1.5 s with them)."""
    found = {f.name: f for f in kernel_dir().glob("*.cl")}
    if not set(FOUNDATIONS) <= set(found):
        raise DeviceError(f"the OpenCL kernel sources in {kernel_dir()} are incomplete "
                          f"(need {', '.join(FOUNDATIONS)}); reinstall grenade_py")
    if files is None:
        return "\n".join(f"// ---- {name}\n{instantiate(found[name].read_text())}"
                         for name in (*FOUNDATIONS, *sorted(set(found) - set(FOUNDATIONS))))
    return "\n".join(
        f"// ---- {name}\n{without_kernels(_TEMPLATE.sub('', found[name].read_text()))}"
        for name in (*FOUNDATIONS, *sorted(set(files) - set(FOUNDATIONS))))


_KERNEL = re.compile(r"^(?:STREAMING )?kernel void \w+\(", re.MULTILINE)


def without_kernels(text: str) -> str:
    """OpenCL C `text` without the kernels it defines at the start of a line (their bodies to
    the brace that closes them; a brace in a comment does not count), the functions left."""
    kept, start = [], 0
    for match in _KERNEL.finditer(text):
        if match.start() < start:
            continue
        kept.append(text[start:match.start()])
        depth, i = 0, text.index("{", match.end())
        while True:
            if text.startswith("//", i):
                i = text.index("\n", i)
            elif text.startswith("/*", i):
                i = text.index("*/", i) + 1
            elif text[i] in "{}":
                depth += 1 if text[i] == "{" else -1
                if depth == 0:
                    break
            i += 1
        start = i + 1
    return "".join(kept) + text[start:]


_TEMPLATE = re.compile(r"^// template ((?:\$\w+ ?)+): ([^\n]+)\n(.*?)^// end template\n",
                       re.DOTALL | re.MULTILINE)


def instantiate(text: str) -> str:
    """The kernel file with each template block written out once per instance: a block opened
    by `// template $RM $RN: 8 2, 4 4` and closed by `// end template` becomes two copies, with
    $RM and $RN replaced by 8 and 2 in the first, by 4 and 4 in the second. (Register blocks
    as literal constants: the same code written as an inlined function of constant arguments
    ran 1.2x slower on PoCL.)"""
    def expand(match: re.Match[str]) -> str:
        names = match[1].split()
        copies = []
        for instance in match[2].split(","):
            body = match[3]
            for name, value in zip(names, instance.split(), strict=True):
                body = body.replace(name, value)
            copies.append(body)
        return "".join(copies)
    return _TEMPLATE.sub(expand, text)

