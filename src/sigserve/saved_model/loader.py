"""Read a SavedModel's `saved_model.pb` (or `.pbtxt`) and select a MetaGraph by its tag set, without
TensorFlow (savedmodel.md §4.1, §4.3).

File precedence and error texts follow `saved_model_cli` (`saved_model_utils.read_saved_model`):
`saved_model.pb` first, then `saved_model.pbtxt`. A file that parses but holds no MetaGraphDef (a
frozen GraphDef renamed to saved_model.pb, an empty file) is rejected here with a hint, where
TensorFlow would fail later with a "tags could not be found" message that hides the real cause.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import message

from sigserve.errors import Code, SigserveError
from sigserve.protos import meta_graph_pb2, saved_model_pb2
from sigserve.saved_model import constants

SavedModel = saved_model_pb2.SavedModel
MetaGraphDef = meta_graph_pb2.MetaGraphDef

# A GraphDef starts with field 1 as a length-delimited NodeDef; a SavedModel's field 1 is a varint.
_GRAPH_DEF_FIRST_TAG = 0x0A


@dataclass(frozen=True)
class SavedModelFile:
    """Which file a SavedModel was read from, so an editor writes back the same one."""

    path: str
    is_text: bool


def find_saved_model_file(export_dir: str | os.PathLike[str]) -> SavedModelFile:
    """The file TensorFlow would read: `saved_model.pb`, else `saved_model.pbtxt`."""
    export_dir = os.fspath(export_dir)
    pb = os.path.join(export_dir, constants.SAVED_MODEL_FILENAME_PB)
    pbtxt = os.path.join(export_dir, constants.SAVED_MODEL_FILENAME_PBTXT)
    if os.path.isfile(pb):
        return SavedModelFile(pb, is_text=False)
    if os.path.isfile(pbtxt):
        return SavedModelFile(pbtxt, is_text=True)
    if os.path.isfile(export_dir):
        raise SigserveError(
            Code.NOT_FOUND,
            f"SavedModel file does not exist at: {export_dir} (a file; --dir takes the SavedModel "
            f"directory, e.g. {os.path.dirname(export_dir) or '.'})",
        )
    if not os.path.isdir(export_dir):
        raise SigserveError(
            Code.NOT_FOUND,
            f"SavedModel file does not exist at: {export_dir} (no such directory; --dir takes a "
            "SavedModel directory, e.g. /models/half_plus_two/00000123)",
        )
    hint = " (no saved_model.pb or saved_model.pbtxt in it)"
    if os.path.isfile(os.path.join(export_dir, constants.SAVED_MODEL_FILENAME_CPB)):
        hint = " (it has saved_model.cpb, TensorFlow's chunked format, which sigserve cannot read)"
    elif _numbered(export_dir):
        latest = os.path.join(export_dir, _numbered(export_dir)[-1])
        hint = f" (it holds version directories; pass one, e.g. {latest})"
    raise SigserveError(Code.NOT_FOUND, f"SavedModel file does not exist at: {export_dir}{hint}")


def _numbered(export_dir: str) -> list[str]:
    try:
        names = os.listdir(export_dir)
    except OSError:
        return []
    return sorted((n for n in names if n.isdigit() and os.path.isdir(os.path.join(export_dir, n))), key=int)


def read_saved_model(export_dir: str | os.PathLike[str]) -> SavedModel:
    """The SavedModel proto of `export_dir` (unknown fields kept, so it can be written back losslessly)."""
    return read_saved_model_file(find_saved_model_file(export_dir))


def read_saved_model_file(source: SavedModelFile) -> SavedModel:
    saved_model = SavedModel()
    try:
        with open(source.path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SigserveError(
            Code.NOT_FOUND, f"Cannot read SavedModel file {source.path}: {e.strerror}"
        ) from None
    if source.is_text:
        from google.protobuf import text_format  # rare; keeps `sigserve show` of a .pb fast

        try:
            # Fields sigserve does not declare (most of the GraphDef) are skipped when reading text.
            text_format.Merge(data.decode("utf-8"), saved_model, allow_unknown_field=True)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise SigserveError(Code.DATA_LOSS, f"Cannot parse pbtxt file {source.path}: {e}.") from None
    else:
        try:
            saved_model.ParseFromString(data)
        except message.DecodeError as e:
            detail = str(e).replace("sigserve.tensorflow.", "tensorflow.")
            raise SigserveError(Code.DATA_LOSS, f"Cannot parse proto file {source.path}: {detail}.") from None
    if not saved_model.meta_graphs:
        raise SigserveError(Code.DATA_LOSS, _not_a_saved_model(source.path, data, source.is_text))
    return saved_model


def _not_a_saved_model(path: str, data: bytes, is_text: bool) -> str:
    if not data:
        what = "it is empty"
    elif not is_text and data[0] == _GRAPH_DEF_FIRST_TAG:
        what = "it looks like a GraphDef (a frozen graph), not a SavedModel"
    else:
        what = "it holds no MetaGraphDef"
    return (
        f"Cannot parse proto file {path}: {what}. A SavedModel is written by tf.saved_model.save "
        "or SavedModelBuilder."
    )


def parse_tag_set(tag_set: str) -> set[str]:
    """`--tag_set serve,gpu` as saved_model_cli reads it: split on ',', empty pieces dropped."""
    return {tag for tag in tag_set.split(",") if tag}


def get_meta_graph(saved_model: SavedModel, tags: Iterable[str]) -> MetaGraphDef:
    """The first MetaGraph whose tag *set* equals `tags`, or NOT_FOUND with TensorFlow's C++ loader
    text (what TF Serving reports)."""
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    shown = " ".join(dict.fromkeys(tags))
    available = "; ".join(", ".join(mg.meta_info_def.tags) or "(empty)" for mg in saved_model.meta_graphs)
    raise SigserveError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {shown} }}. To inspect available tag-sets "
        f"in the SavedModel, please use the SavedModel CLI: `saved_model_cli` (available: {available})",
    )


def get_meta_graph_by_tag_set(saved_model: SavedModel, tag_set: str) -> MetaGraphDef:
    """`--tag_set` selection with saved_model_cli's error text."""
    wanted = parse_tag_set(tag_set)
    valid_tags: list[str] = []
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
        valid_tags.append(",".join(dict.fromkeys(meta_graph.meta_info_def.tags)))
    raise SigserveError(
        Code.NOT_FOUND,
        f"MetaGraphDef associated with tag-set {tag_set} could not be found in the SavedModel. "
        f"Please use one of the following tag-sets: {valid_tags}",
    )
