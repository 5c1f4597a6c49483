"""Protocol buffers with TensorFlow's and TF Serving's field numbers under this project's own package
names (`sigserve.tensorflow`, `sigserve.tensorflow.serving`, `sigserve.inference` for the Open
Inference Protocol), so sigserve, TensorFlow, tensorflow-serving-api and the V2 clients and servers
(tritonclient, kserve, MLServer) can share one process without descriptor-pool clashes.

Where a *name* (not a field number) crosses the wire, the protocols' own names are used explicitly:
the gRPC service paths and the `google.protobuf.Any` type URL below.
"""

SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
INFERENCE_SERVICE = "inference.GRPCInferenceService"
