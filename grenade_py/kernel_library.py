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
    their templates (the register-blocked GEMMs), as `functions_only`: what a generated loop
    calls (see `called_only`), which builds in a fraction of the whole library's time."""
    found = {f.name: f for f in kernel_dir().glob("*.cl")}
    if not set(FOUNDATIONS) <= set(found):
        raise DeviceError(f"the OpenCL kernel sources in {kernel_dir()} are incomplete "
                          f"(need {', '.join(FOUNDATIONS)}); reinstall grenade_py")
    if files is None:
        return "\n".join(f"// ---- {name}\n{instantiate(found[name].read_text())}"
                         for name in (*FOUNDATIONS, *sorted(set(found) - set(FOUNDATIONS))))
    return "\n".join(
        f"// ---- {name}\n{functions_only(_TEMPLATE.sub('', found[name].read_text()))}"
        for name in (*FOUNDATIONS, *sorted(set(files) - set(FOUNDATIONS))))


_KERNEL = re.compile(r"^(?:STREAMING )?kernel void \w+\(", re.MULTILINE)
#: A macro's definition, continued over lines ending in a backslash.
_MACRO = re.compile(r"^#define (\w+\([^)]*\))[^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*$", re.MULTILINE)
#: A function's definition or declaration at the start of a line: return type, name, "(".
_FUNCTION = re.compile(r"^(?!kernel |STREAMING |typedef |struct |constant )\w+ +\**(\w+)\(",
                       re.MULTILINE)


def _block_end(text: str, i: int) -> int:
    """The index of the brace closing the block that opens at the first "{" from `i` (a brace in
    a comment does not count)."""
    depth, i = 0, text.index("{", i)
    while True:
        if text.startswith("//", i):
            i = text.index("\n", i)
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 1
        elif text[i] in "{}":
            depth += 1 if text[i] == "{" else -1
            if depth == 0:
                return i
        i += 1


def functions_only(text: str) -> str:
    """OpenCL C `text` without the kernels it defines at the start of a line (their bodies to
    the brace that closes them) and with the macros that define kernels defined empty: its
    functions, types and other macros."""
    kept, start = [], 0
    for match in _KERNEL.finditer(text):
        if match.start() >= start:
            kept.append(text[start:match.start()])
            start = _block_end(text, match.end()) + 1
    functions = "".join(kept) + text[start:]
    return _MACRO.sub(lambda m: f"#define {m[1]}" if "kernel void" in m[0] else m[0], functions)


@functools.lru_cache(maxsize=4)
def _definitions(text: str) -> tuple[frozenset[str], dict[str, tuple[int, int, frozenset[str]]]]:
    """The identifiers in `text` outside its function definitions (macros, types, declarations,
    macro calls) and comments, and each definition at the start of a line outside a macro, in
    the text's order: its name -> its span and the identifiers in it."""
    macros = [m.span() for m in _MACRO.finditer(text)]
    found, outside, start = {}, [], 0
    for match in _FUNCTION.finditer(text):
        brace, semicolon = text.find("{", match.end()), text.find(";", match.end())
        if match.start() < start or brace == -1 or -1 < semicolon < brace or \
                any(a <= match.start() < b for a, b in macros):
            continue  # inside the last definition, a declaration, or in a macro
        end = _block_end(text, brace) + 1
        found[match[1]] = match.start(), end, _identifiers(text[match.start():end])
        outside.append(text[start:match.start()])
        start = end
    outside.append(text[start:])
    return _identifiers("".join(outside)), found


def _identifiers(code: str) -> frozenset[str]:
    """The words of OpenCL C `code` outside its comments."""
    return frozenset(re.findall(r"\w+", _COMMENT.sub(" ", code)))


_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def called_only(text: str, code: str) -> str:
    """`text` (functions_only's) without the function definitions that neither `code` nor
    the rest of `text` calls, directly or through others: a generated loop's program then
    compiles only what it runs. PoCL 3.1, Zen 3, cold: three MLPs' and a convnet's fused
    loops built in 0.44-0.66 s each, against 0.95-1.24 s with every function (and the macros'
    kernels); LeNet's first per-example step 2.2-2.4 s, against 2.7-2.9; the fused kernels'
    binaries (LeNet's, the MLPs') the same bytes."""
    always, found = _definitions(text)
    wanted = _identifiers(code) | always
    called: set[str] = set()
    todo = [name for name in found if name in wanted]
    while todo:
        name = todo.pop()
        if name not in called:
            called.add(name)
            todo += [word for word in found[name][2] if word in found]
    kept, start = [], 0
    for name, (first, end, _) in found.items():  # in the text's order
        if name not in called:
            kept.append(text[start:first])
            start = end
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

