"""Edit the SignatureDefs of an existing SavedModel without TensorFlow: set a method name (what
TensorFlow's `MethodNameUpdater` does, and the way to make a TF2 export servable by Classify/Regress),
rename, copy or delete a signature, or choose the default (`serving_default`).

How the files are written:
- Only `saved_model.pb` is rewritten; `variables/`, `assets/` and `assets.extra/` are never touched.
  Fields sigserve does not declare survive as unknown fields, so nothing else in the file changes
  meaning.
- Deterministically (`SerializeToString(deterministic=True)`, map keys sorted, as TensorFlow writes)
  and atomically: a temporary file in the same directory, fsync, then rename over the original, so a
  server or a crash never sees half a file. The original file mode is kept.
- A SavedModel stored as `saved_model.pbtxt` is refused: sigserve reads only part of the GraphDef
  schema, and text format cannot carry the rest through as unknown fields.
- TF2 models keep their object graph in step: the root's `signatures` map (which `tf.saved_model.load`
  reads instead of `signature_def`) gets the same rename, copy or delete.
- The reserved keys `__saved_model_init_op` and `__saved_model_train_op` can be neither edited nor
  created, with TensorFlow's builder texts.

fingerprint.pb policy: an edit **deletes** `fingerprint.pb` (before the new saved_model.pb is put in
place). Its `saved_model_checksum` and `signature_def_hash` describe the old file; a stale fingerprint
would tell fingerprint-keyed tools (caches, ML Metadata lineage) that the edited model is the original.
A missing fingerprint is an ordinary state: TensorFlow loads and serves such models (the TF1 builder and
TF before 2.11 never write one), and `tf.saved_model.save` writes a fresh one on the next export.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import tempfile
from collections.abc import Iterable

from sigserve.errors import Code, SigserveError
from sigserve.protos import meta_graph_pb2, saved_model_pb2, saved_object_graph_pb2
from sigserve.saved_model import constants, loader
from sigserve.saved_model import signature_constants as sc

_RESERVED_TEXT = {
    constants.INIT_OP_SIGNATURE_KEY: "is reserved for initialization",
    constants.TRAIN_OP_SIGNATURE_KEY: "is reserved for the train op",
}

_SIGNATURE_MAP_IDENTIFIER = "signature_map"

# `--method classify` shorthands for the three serving method names.
METHOD_SHORTHANDS = {
    "predict": sc.PREDICT_METHOD_NAME,
    "classify": sc.CLASSIFY_METHOD_NAME,
    "regress": sc.REGRESS_METHOD_NAME,
}


def resolve_method_name(method: str) -> str:
    """`classify` -> `tensorflow/serving/classify`; any other non-empty name is kept as given."""
    if not method:
        raise SigserveError(Code.INVALID_ARGUMENT, "A method name cannot be empty; e.g. --method classify")
    return METHOD_SHORTHANDS.get(method, method)


def serving_method_name(method: str) -> str:
    """A method name TF Serving's APIs know: `predict` | `classify` | `regress` or the full name.
    `resolve_method_name` (TensorFlow's MethodNameUpdater rule) takes any name; a command line should
    not write a typo such as `classifyy` into saved_model.pb."""
    if method in METHOD_SHORTHANDS.values():
        return method
    if method in METHOD_SHORTHANDS:
        return METHOD_SHORTHANDS[method]
    close = difflib.get_close_matches(method, [*METHOD_SHORTHANDS, *METHOD_SHORTHANDS.values()], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SigserveError(
        Code.INVALID_ARGUMENT,
        f"{method!r} is not a method TF Serving serves: {hint}Choose predict, classify or regress "
        "(or tensorflow/serving/predict, tensorflow/serving/classify, tensorflow/serving/regress).",
    )


def _check_not_reserved(key: str) -> None:
    if key in _RESERVED_TEXT:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f'SignatureDef map key "{key}" {_RESERVED_TEXT[key]}. Please use a different key.',
        )


def _detached(signature: meta_graph_pb2.SignatureDef) -> meta_graph_pb2.SignatureDef:
    """A copy that stays valid while the map it came from is changed."""
    copy = meta_graph_pb2.SignatureDef()
    copy.CopyFrom(signature)
    return copy


class SavedModelEditor:
    """One MetaGraph of one SavedModel directory, edited in memory; `save()` writes it back.

    `tags=None` picks the only MetaGraph (TF2 exports have one) and fails if there are several.
    """

    def __init__(self, export_dir: str | os.PathLike[str], tags: Iterable[str] | None = None) -> None:
        self.export_dir = os.fspath(export_dir)
        self.source = loader.find_saved_model_file(self.export_dir)
        if self.source.is_text:
            raise SigserveError(
                Code.FAILED_PRECONDITION,
                f"{self.source.path} is a text-format SavedModel; sigserve edits only saved_model.pb "
                "(re-save it with SavedModelBuilder.save(as_text=False)).",
            )
        self.saved_model: saved_model_pb2.SavedModel = loader.read_saved_model_file(self.source)
        self.meta_graph = self._select(tags)
        self.changed = False

    def _select(self, tags: Iterable[str] | None) -> meta_graph_pb2.MetaGraphDef:
        if tags is not None:
            return loader.get_meta_graph(self.saved_model, tags)
        if len(self.saved_model.meta_graphs) == 1:
            return self.saved_model.meta_graphs[0]
        tag_sets = ", ".join(repr(",".join(mg.meta_info_def.tags)) for mg in self.saved_model.meta_graphs)
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"The SavedModel has {len(self.saved_model.meta_graphs)} MetaGraphs ({tag_sets}); "
            "choose one with --tag_set, e.g. --tag_set serve",
        )

    @property
    def signatures(self) -> dict[str, meta_graph_pb2.SignatureDef]:
        return dict(self.meta_graph.signature_def)

    def _require(self, key: str) -> meta_graph_pb2.SignatureDef:
        if key not in self.meta_graph.signature_def:
            keys = ", ".join(sorted(self.meta_graph.signature_def))
            raise SigserveError(
                Code.NOT_FOUND, f'Could not find signature "{key}". Please choose from: {keys}'
            )
        return self.meta_graph.signature_def[key]

    def _require_absent(self, key: str) -> None:
        if not key:
            raise SigserveError(Code.INVALID_ARGUMENT, "A signature key cannot be empty.")
        if key in self.meta_graph.signature_def:
            raise SigserveError(
                Code.ALREADY_EXISTS,
                f'Signature "{key}" already exists; delete it first (sigserve signature delete --key {key}).',
            )

    # --- edits ---------------------------------------------------------------------------------------

    def set_method(self, key: str, method_name: str) -> None:
        """Set `key`'s method_name, e.g. to tensorflow/serving/classify so TF Serving's Classify API
        (with --enable_signature_method_name_check) accepts a TF2 export."""
        _check_not_reserved(key)
        signature = self._require(key)
        method_name = resolve_method_name(method_name)
        if signature.method_name != method_name:
            signature.method_name = method_name
            self.changed = True

    def rename(self, old: str, new: str) -> None:
        _check_not_reserved(old)
        _check_not_reserved(new)
        signature = _detached(self._require(old))
        if old == new:
            return
        self._require_absent(new)
        self.meta_graph.signature_def[new].CopyFrom(signature)
        del self.meta_graph.signature_def[old]
        self._object_graph_rename(old, new)
        self.changed = True

    def copy(self, source: str, target: str) -> None:
        _check_not_reserved(source)
        _check_not_reserved(target)
        signature = _detached(self._require(source))
        self._require_absent(target)
        self.meta_graph.signature_def[target].CopyFrom(signature)
        self._object_graph_copy(source, target)
        self.changed = True

    def delete(self, key: str) -> None:
        _check_not_reserved(key)
        self._require(key)
        del self.meta_graph.signature_def[key]
        self._object_graph_delete(key)
        self.changed = True

    def set_default(self, key: str, keep_old_as: str | None = None) -> None:
        """Make `key` the default signature: `serving_default` becomes a copy of it. The previous
        default is renamed to `keep_old_as` when given, else replaced."""
        default = sc.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        _check_not_reserved(key)
        self._require(key)
        if key == default:
            return
        if keep_old_as is not None and default in self.meta_graph.signature_def:
            self.rename(default, keep_old_as)
        elif default in self.meta_graph.signature_def:
            self.delete(default)
        self.copy(key, default)

    # --- the TF2 object graph's signature map --------------------------------------------------------

    def _signature_map(self) -> saved_object_graph_pb2.SavedObject | None:
        if not self.meta_graph.HasField("object_graph_def"):
            return None
        nodes = self.meta_graph.object_graph_def.nodes
        if not nodes:
            return None
        for ref in nodes[0].children:
            if ref.local_name == "signatures" and 0 <= ref.node_id < len(nodes):
                node = nodes[ref.node_id]
                if node.WhichOneof("kind") == "user_object" and (
                    node.user_object.identifier == _SIGNATURE_MAP_IDENTIFIER
                ):
                    return node
        return None

    def _object_graph_rename(self, old: str, new: str) -> None:
        node = self._signature_map()
        if node is not None:
            for ref in node.children:
                if ref.local_name == old:
                    ref.local_name = new

    def _object_graph_copy(self, source: str, target: str) -> None:
        node = self._signature_map()
        if node is not None:
            for ref in list(node.children):
                if ref.local_name == source:
                    node.children.add(node_id=ref.node_id, local_name=target)
                    break

    def _object_graph_delete(self, key: str) -> None:
        node = self._signature_map()
        if node is not None:
            kept = [ref for ref in node.children if ref.local_name != key]
            if len(kept) != len(node.children):
                refs = [(ref.node_id, ref.local_name) for ref in kept]
                del node.children[:]
                for node_id, local_name in refs:
                    node.children.add(node_id=node_id, local_name=local_name)

    # --- writing -------------------------------------------------------------------------------------

    def serialize(self) -> bytes:
        return self.saved_model.SerializeToString(deterministic=True)

    def save(self) -> bool:
        """Write saved_model.pb back (atomically, deterministically) if anything changed; drop the
        stale fingerprint.pb. Returns whether a file was written."""
        if not self.changed:
            return False
        data = self.serialize()
        fingerprint = os.path.join(self.export_dir, constants.FINGERPRINT_FILENAME)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.remove(fingerprint)
            atomic_write(self.source.path, data)
        except PermissionError as e:
            raise SigserveError(
                Code.PERMISSION_DENIED,
                f"Cannot write {e.filename or self.source.path}: permission denied (write an edited copy "
                "with --output_dir DIR instead).",
            ) from None
        except OSError as e:
            raise SigserveError(Code.INTERNAL, f"Cannot write {self.source.path}: {e.strerror}") from None
        self.changed = False
        return True


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never a mix."""
    directory = os.path.dirname(path) or "."
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def copy_saved_model(export_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> str:
    """Copy a SavedModel directory (variables, assets, assets.extra and all) to a new directory, the
    usual first step for publishing an edited model as a new version beside the old one."""
    export_dir, output_dir = os.fspath(export_dir), os.fspath(output_dir)
    loader.find_saved_model_file(export_dir)
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise SigserveError(
            Code.ALREADY_EXISTS, f"Output directory {output_dir} already exists and is not empty."
        )
    try:
        shutil.copytree(export_dir, output_dir, dirs_exist_ok=True)
        # Fixtures and read-only mounts come with read-only modes; the copy is ours to edit.
        for root, dirs, files in os.walk(output_dir):
            for name in dirs + files:
                p = os.path.join(root, name)
                os.chmod(p, os.stat(p).st_mode | 0o200)
        os.chmod(output_dir, os.stat(output_dir).st_mode | 0o200)
    except OSError as e:
        raise SigserveError(Code.INTERNAL, f"Cannot copy {export_dir} to {output_dir}: {e}") from None
    return output_dir
