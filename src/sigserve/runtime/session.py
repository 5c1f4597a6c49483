"""One SavedModel MetaGraph loaded into its own TensorFlow Graph and Session, run by tensor name.

This is the only module that touches TensorFlow's session machinery. Two choices make it match TF
Serving rather than `tf.compat.v1.Session.run`:

* Feeds go straight to the C session (`TF_SessionRun`, what `Session.run` ends in) without the
  Python-side checks `Session.run` adds: it casts a float64 feed to the placeholder's float32 and
  rejects a `[3]` feed for a `[-1, 1]` placeholder, while TF Serving passes tensors through and lets
  the kernels decide. So `{"instances": [1.0, 2.0, 5.0]}` on half_plus_two works, and a wrong dtype
  fails with TensorFlow's own "Expects arg[0] to be float but double is provided".
* The C call releases the GIL while TensorFlow runs, so threads overlap. `make_callable` with a
  feed list is `Session.run` in disguise (about 6x slower per call on a 1-row model), so the cache
  here holds resolved graph endpoints per tensor name instead of Python callables.

A deadline travels as `RunOptions.timeout_in_ms`; TensorFlow cancels the step and reports
DEADLINE_EXCEEDED. Every TensorFlow error becomes a `SigserveError` with TensorFlow's code and text.

`run(..., in_caller_thread=True)` asks TensorFlow to execute the step's ops in the calling thread
(`RunOptions.inter_op_thread_pool = -1`) instead of handing each op to the session's inter-op pool
and sleeping until the pool is done: for a graph of a few tiny ops those two thread hand-offs cost
more than the ops. It is per call, never a session setting, because it has two costs: independent
ops of one step no longer run in parallel (only small graphs should ask), and a step running in the
caller thread cannot be cancelled. So a call with a deadline always takes the deadline path and
ignores `in_caller_thread`: a deadline is a promise that a runaway step stops.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.client import pywrap_tf_session as _c_api
from tensorflow.python.saved_model import loader_impl

from sigserve.errors import Code, SigserveError

# Python graph construction is not something to do from several threads at once; restoring
# variables and running init ops (C++, GIL released) happen outside this lock.
_IMPORT_LOCK = threading.Lock()


def _timeout_options(timeout: float) -> bytes:
    """A serialized `RunOptions{timeout_in_ms}` (field 2, varint), built without a proto object."""
    ms = max(1, math.ceil(timeout * 1000.0))
    out = bytearray(b"\x10")
    while True:
        byte = ms & 0x7F
        ms >>= 7
        if ms:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# RunOptions{inter_op_thread_pool: -1}: field 3, varint; an int32 -1 is written as a 10-byte varint.
CALLER_THREAD_RUN_OPTIONS = b"\x18" + b"\xff" * 9 + b"\x01"
# TF_SessionRun only parses the options buffer, so one buffer serves every thread, for the process's
# lifetime (created on first use).
_caller_thread_buffer: Any = None


def _caller_thread_options() -> Any:
    global _caller_thread_buffer
    if _caller_thread_buffer is None:
        _caller_thread_buffer = _c_api.TF_NewBufferFromString(CALLER_THREAD_RUN_OPTIONS)
    return _caller_thread_buffer


def _native_array(value: Any) -> np.ndarray:
    """TensorFlow reads array memory as native-endian: a '>f4' array would be misread, not refused."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise SigserveError(Code.INVALID_ARGUMENT, f"feed is not a tensor: {e}") from None
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def error_from_tf(e: BaseException) -> SigserveError:
    """TensorFlow's status as a SigserveError: same canonical code, TensorFlow's message."""
    if isinstance(e, tf.errors.OpError):
        try:
            code = Code(e.error_code)
        except ValueError:
            code = Code.UNKNOWN
        if code == Code.INTERNAL and e.message.startswith("Unsupported object type"):
            # Raised while converting a fed numpy object array (e.g. of dicts): the caller's input.
            code = Code.INVALID_ARGUMENT
        return SigserveError(code, e.message)
    return SigserveError(Code.INVALID_ARGUMENT, str(e))


class Session:
    """A TensorFlow Session over one imported MetaGraph; `run` is the runner a Servable starts with."""

    def __init__(self, graph: tf.Graph, session: tf.compat.v1.Session) -> None:
        self.graph = graph
        self.tf_session = session
        # tensor name -> TF_Output. Filled on first use of a name; dict writes are atomic under the GIL.
        self._endpoints: dict[str, Any] = {}
        self._closed = False

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        feeds: Mapping[str, Any],
        fetches: Sequence[str],
        timeout: float | None = None,
        *,
        in_caller_thread: bool = False,
    ) -> list[np.ndarray]:
        """Feed arrays by tensor name, fetch tensors by name; results in `fetches` order.
        `in_caller_thread` applies only without a `timeout` (module docstring)."""
        endpoints = self._endpoints
        feed_dict = {}
        for name, value in feeds.items():
            endpoint = endpoints.get(name)
            if endpoint is None:
                endpoint = self._endpoint(name, "feed")
            if type(value) is not np.ndarray or not value.dtype.isnative:
                value = _native_array(value)
            feed_dict[endpoint] = value
        try:
            fetch_list = [endpoints[name] for name in fetches]
        except KeyError:
            fetch_list = [self._endpoint(name, "fetch") for name in fetches]
        if self._closed:
            raise SigserveError(Code.UNAVAILABLE, "Session has been closed (the servable was unloaded).")
        options = None
        owned = False
        if timeout is not None:
            if timeout <= 0:
                raise SigserveError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
            options = _c_api.TF_NewBufferFromString(_timeout_options(timeout))
            owned = True
        elif in_caller_thread:
            options = _caller_thread_options()
        try:
            results = _c_api.TF_SessionRun_wrapper(
                self.tf_session._session, options, feed_dict, fetch_list, [], None
            )
        except (tf.errors.OpError, TypeError, ValueError) as e:
            raise error_from_tf(e) from None
        finally:
            if owned:
                _c_api.TF_DeleteBuffer(options)
        # A 0-d fetch comes back as a numpy scalar (a 0-d string as `bytes`); the contract is
        # ndarrays, strings as object arrays of bytes (np.asarray would make a bytes_ array, which
        # drops trailing NULs and which no encoder takes).
        for i, value in enumerate(results):
            if type(value) is not np.ndarray:
                if type(value) is bytes:
                    scalar = np.empty((), dtype=object)
                    scalar[()] = value
                    results[i] = scalar
                else:
                    results[i] = np.asarray(value)
        return results  # type: ignore[no-any-return]

    def _endpoint(self, name: str, role: str) -> Any:
        endpoint = self._endpoints.get(name)
        if endpoint is not None:
            return endpoint
        if not name:
            raise SigserveError(
                Code.INVALID_ARGUMENT,
                "A TensorInfo without a tensor name (sparse or composite encoding) cannot be "
                f"{role}ed; sigserve runs signatures whose inputs and outputs are dense tensors.",
            )
        try:
            element = self.graph.as_graph_element(name, allow_tensor=True, allow_operation=True)
        except (KeyError, ValueError) as e:
            what = "FeedInputs: unable to find feed output" if role == "feed" else "FetchOutputs node"
            raise SigserveError(Code.NOT_FOUND, f"{what} {name}: not found ({e})") from None
        if not isinstance(element, tf.Tensor):
            raise SigserveError(
                Code.INVALID_ARGUMENT,
                f"{name} names an operation, not a tensor; only tensors can be {role}ed (e.g. {name}:0).",
            )
        endpoint = element._as_tf_output()
        self._endpoints[name] = endpoint
        return endpoint

    def close(self) -> None:
        """Release the session's resources. The Session object is kept so a late call gets an error,
        never a dangling pointer."""
        if not self._closed:
            self._closed = True
            self.tf_session.close()


def _config(intra_op_parallelism: int, inter_op_parallelism: int) -> tf.compat.v1.ConfigProto:
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=int(intra_op_parallelism),
        inter_op_parallelism_threads=int(inter_op_parallelism),
        allow_soft_placement=True,
    )


def _tags_not_found(tags: Iterable[str], available: list[list[str]]) -> SigserveError:
    shown = " ".join(dict.fromkeys(tags))
    listed = "; ".join(", ".join(t) or "(empty)" for t in available) or "none"
    return SigserveError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {shown} }}. To inspect available "
        f"tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli` "
        f"(available: {listed})",
    )


def load_session(
    export_dir: str, tags: Sequence[str], intra_op_parallelism: int = 0, inter_op_parallelism: int = 0
) -> tuple[Session, bytes]:
    """Import the MetaGraph whose tag set equals `tags`, restore its variables and run its init op
    (`__saved_model_init_op`, else the legacy main/init op collections), as TF Serving's loader does.

    Returns the session and the serialized TensorFlow MetaGraphDef (same wire format as sigserve's).
    """
    try:
        loader = loader_impl.SavedModelLoader(export_dir)
    except (OSError, ValueError, RuntimeError) as e:
        raise SigserveError(Code.DATA_LOSS, f"Failed to read the SavedModel at {export_dir}: {e}") from None
    wanted = set(tags)
    available = [list(mg.meta_info_def.tags) for mg in loader.saved_model.meta_graphs]
    if not any(set(t) == wanted for t in available):
        raise _tags_not_found(tags, available)

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=_config(intra_op_parallelism, inter_op_parallelism))
    try:
        with graph.as_default():
            with _IMPORT_LOCK:
                saver, _ = loader.load_graph(graph, list(tags))
            loader.restore_variables(session, saver)
            loader.run_init_ops(session, list(tags))
        meta_graph = loader.get_meta_graph_def_from_tags(list(tags))
        # Nothing adds ops after loading; a finalized graph is safe to share between threads.
        graph.finalize()
        serialized = meta_graph.SerializeToString()
    except BaseException as e:
        session.close()
        if isinstance(e, SigserveError):
            raise
        if isinstance(e, tf.errors.OpError):
            err = error_from_tf(e)
            raise SigserveError(err.code, f"Failed to load SavedModel {export_dir}: {err.message}") from None
        if isinstance(e, Exception):
            raise SigserveError(
                Code.INTERNAL, f"Failed to load SavedModel {export_dir}: {type(e).__name__}: {e}"
            ) from None
        raise
    return Session(graph, session), serialized


def legacy_export_hint(export_dir: str) -> str:
    """Why a directory without saved_model.pb might still look like a model to its owner."""
    if os.path.isfile(os.path.join(export_dir, "export.meta")):
        return (
            " It holds a legacy SessionBundle export (export.meta), which TensorFlow Serving no longer "
            "loads; re-export it as a SavedModel (tf.saved_model.save or SavedModelBuilder)."
        )
    return ""
