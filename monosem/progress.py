"""Progress bars that leave their final text in executed notebooks and HTML exports.

In a Jupyter kernel a bar is one display (text and a small HTML bar) updated in place through its display id:
JupyterLab redraws it live, and nbconvert applies the same updates to the saved output, so an executed notebook
reads "extract: 2352/2352 texts [00:21, 110.2 texts/s]" instead of a widget's first state ("0/2352"). Outside a
kernel (scripts, tests) it is tqdm on stderr.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Iterator
from typing import Any


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Progress:
    """A minimal tqdm: ``Progress(total=n, desc=..., unit=...)`` with ``update``/``close``, or ``Progress(iterable)``.
    ``disable`` shows nothing; ``mininterval`` (seconds) bounds how often the display is redrawn."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, mininterval: float = 0.5):
        self.iterable, self.desc, self.unit, self.disable, self.mininterval = iterable, desc, unit, disable, mininterval
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.start, self.shown_at = total, 0, time.perf_counter(), 0.0
        self._tqdm: Any = None
        self._handle: Any = None
        if disable:
            return
        if _in_kernel():
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, mininterval=mininterval)

    def text(self) -> str:
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total, time.perf_counter() - self.start, prefix=self.desc, unit=self.unit)  # type: ignore[arg-type]  # None: no total

    def _bundle(self) -> dict[str, str]:
        text = self.text()
        share = min(1.0, self.n / self.total) if self.total else 0.0
        bar = (f'<div style="font-family:monospace;font-size:12px"><span style="display:inline-block;width:160px;height:8px;'
               f'background:#e5e7eb;margin-right:8px"><span style="display:block;height:8px;width:{share:.0%};background:#2563eb">'
               f"</span></span>{html.escape(text)}</div>")
        return {"text/plain": text, "text/html": bar}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self._handle is not None and time.perf_counter() - self.shown_at >= self.mininterval:
            self.shown_at = time.perf_counter()
            self._handle.update(self._bundle(), raw=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
            self._handle = None

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("Progress(total=...) is not iterable: pass the iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
