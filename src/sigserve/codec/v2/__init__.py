"""The Open Inference Protocol ("V2", KServe's and Triton's protocol), decoded and encoded without
TensorFlow and without sockets: the front ends hand it bytes and get bytes back.

* `datatypes`: V2 datatype names ⇄ TensorFlow DataTypes ⇄ numpy.
* `tensors`: one tensor's shape and data in each framing (JSON `data`, binary), and the
  classification extension.
* `request`: `InferRequest` / `InferResponse`, the transport-neutral call, and the parameters
  sigserve reads (`signature_name`, `timeout`, `binary_data_output`, `binary_data`,
  `classification`).
* `rest`: REST bodies, JSON and the binary tensor data extension.
* `grpc`: `ModelInferRequest` / `ModelInferResponse` and the other messages of
  `inference.GRPCInferenceService` (sigserve's own proto package, `sigserve.inference`).
* `metadata`: model metadata from SignatureDefs.
* `examples`: named feature inputs -> serialized tf.Examples for Classify/Regress signatures.

Every malformed request is a `SigserveError(INVALID_ARGUMENT, ...)` saying what to send instead;
nothing here allocates more than the request's own size.
"""
