"""Everything that crosses the wire, decoded and encoded without TensorFlow.

* `dtypes`: TensorFlow DataType ⇄ numpy dtype and TF's type names.
* `tensor`: TensorProto ⇄ numpy (`to_ndarray`, `from_ndarray`).
* `json`: TF Serving's REST bodies (predict, classify, regress, errors) ⇄ numpy / protos.
* `example`: tf.Example inputs (feature dicts -> Input, Input -> serialized-example tensor).
"""

# The deepest nesting of JSON arrays and objects a request document may have (REST, V2 JSON):
# `serve --max_request_json_depth`. A tensor of rank N needs N + 1 to N + 4 levels (its lists, plus
# the request's objects and a {"b64": ...} leaf), and numpy holds at most 64 dimensions, so 100
# refuses only documents no tensor needs, before they cost memory.
DEFAULT_MAX_JSON_DEPTH = 100
