"""TensorFlow execution of SavedModel signatures: the only sigserve package that imports TensorFlow.

`load(export_dir, tags=("serve",), ...)` returns a `Servable` (one loaded model version) whose
`predict`, `classify`, `regress` and `multi_inference` behave like TF Serving's (docs/architecture.md).
"""

from __future__ import annotations

from sigserve.runtime import tflog

tflog.import_tensorflow()  # before any module below imports it: filters TensorFlow's start-up lines

from sigserve.runtime.servable import Servable, load  # noqa: E402

__all__ = ["Servable", "load"]
